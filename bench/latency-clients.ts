/**
 * Benchmark 3 as the issue words it: Alice's `send()` → Bob's `subscribe` callback, both full
 * clients (signing, sealing, the outbox, the relay's durable commit, decryption, the checks,
 * Yjs, storage, the shown list), paced at a fixed rate. Both apps render: each reads its
 * newest messages on every change (`lastMessages`), Alice's with their ticks moving. Alice runs here, Bob on a worker
 * thread of this process (latency-receiver.ts), the relay in a process of its own: three
 * devices' worth of work on this machine's two cores. Both clients read one clock
 * (`performance.timeOrigin + now()`). The first `warmupSeconds` are warm-up and are not counted
 * (see {@link CLIENT_WARMUP_SECONDS}). Latency is from the `send()` call to the first callback
 * after which Bob's list holds the message.
 * Reference: the raw `ws` echo of `latency.ts`, measured in the same run.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { createClient } from '../src/client/index.js'
import { relayCounter, type ReceiverReply, tidOf, workerReplies } from './common.js'
import { clientOptions, type ReceiverData } from './latency-receiver.js'
import { startServer } from './server-process.js'
import { type PacedLatency, PacedSends } from './paced-sends.js'

export interface ClientLatencyResult extends PacedLatency {
  /** The relay's whole run (warm-up included): bytes it sent, and snapshot-part bytes it spared live members. */
  relayBytesOut: number
  partBytesSpared: number
}

/**
 * Warm-up before the full clients' latency is counted. Three isolates (Alice, Bob's worker, the
 * replica thread) compile the client's code while they run: at 10,000/s V8 completed 283
 * optimizations in the first second, 88 in the second and 17–51 a second from the third on
 * (`--trace-opt`), and the compiler threads took a core's share meanwhile. With one second of
 * warm-up the backlog of that phase was most of what the counted seconds measured (p50
 * 376–654 ms at 10,000/s against 20–70 ms after five seconds, alternating runs).
 */
export const CLIENT_WARMUP_SECONDS = 5

export async function latencyClients(rate: number, seconds: number, warmupSeconds = CLIENT_WARMUP_SECONDS): Promise<ClientLatencyResult> {
  const server = await startServer('petrel')
  const dir = mkdtempSync(join(tmpdir(), 'petrel-bench-latency-'))
  let bob: Worker | undefined
  try {
    const alice = await createClient({ relay: server.url, name: 'alice', storage: join(dir, 'alice.db'), ...clientOptions() })
    const conv = await alice.createConversation({ title: 'latency' })
    // Alice's app shows her list as it changes, ticks and all, as a chat screen does: each
    // ack and receipt re-renders her newest messages.
    let shown = 0
    conv.subscribe(() => {
      shown += conv.lastMessages(50).length
    })
    await conv.send('hello')
    const total = Math.round(rate * (seconds + warmupSeconds))
    const data: ReceiverData = { url: server.url, storage: join(dir, 'bob.db'), invite: await conv.invite(), total }
    bob = new Worker(new URL('./latency-receiver.js', import.meta.url), { workerData: data })
    const next = workerReplies<ReceiverReply>(bob, 'latency')
    const paced = new PacedSends(rate, total, warmupSeconds, server, tidOf(await next()))
    const failures: unknown[] = []
    await paced.run((text) => {
      conv.send(text).catch((err: unknown) => failures.push(err))
    })
    const arrived = await next()
    await paced.stop('full clients')
    if (arrived.kind !== 'arrived') throw new Error('latency: the receiving device did not say it had every message')
    const done = await next()
    if (failures.length > 0) throw failures[0]
    if (done.kind !== 'done') throw new Error('latency: the receiving device did not finish')
    const { sentAt, from } = paced
    const lat = paced.latencies(done.arrivedAt)
    if (process.env.BENCH_SERIES) {
      const per = Math.max(1, Math.round(rate / 10))
      const series: string[] = []
      for (let i = from; i < total; i += per) {
        let worst = 0
        for (let j = i; j < Math.min(total, i + per); j++) worst = Math.max(worst, done.arrivedAt[j]! - sentAt[j]!)
        series.push(`${i / 1000}k:${worst.toFixed(0)}`)
      }
      console.log('SERIES', series.join(' '))
    }
    await alice.close()
    if (shown === 0) throw new Error('latency: the sending device never showed its list')
    const relayBytesOut = await relayCounter(server.url, 'petrel_bytes_out_total')
    const partBytesSpared = await relayCounter(server.url, 'petrel_snapshot_part_bytes_spared_total')
    return { ...paced.summary(lat), relayBytesOut, partBytesSpared }
  } finally {
    await bob?.terminate()
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
