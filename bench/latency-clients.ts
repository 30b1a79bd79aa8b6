/**
 * Benchmark 3 as the issue words it: Alice's `send()` → Bob's `subscribe` callback, both full
 * clients (signing, sealing, the outbox, the relay's durable commit, decryption, the checks,
 * Yjs, storage, the shown list), paced at a fixed rate. Both run in this process, so one clock
 * times them and the relay runs in its own. The first second is warm-up and is not counted.
 * Latency is from the `send()` call to the first callback after which Bob's list holds the
 * message. Reference: the raw `ws` echo of `latency.ts`, measured in the same run.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createClient } from '../src/client/index.js'
import { percentile, until } from './common.js'
import { startServer } from './server-process.js'

export interface ClientLatencyResult {
  p50Ms: number
  p99Ms: number
  maxMs: number
  messages: number
}

export async function latencyClients(rate: number, seconds: number): Promise<ClientLatencyResult> {
  const server = await startServer('petrel')
  const dir = mkdtempSync(join(tmpdir(), 'petrel-bench-latency-'))
  try {
    const alice = await createClient({ relay: server.url, name: 'alice', storage: join(dir, 'alice.db') })
    const bob = await createClient({ relay: server.url, name: 'bob', storage: join(dir, 'bob.db') })
    const conv = await alice.createConversation({ title: 'latency' })
    const bobConv = await bob.join(await conv.invite())
    await conv.send('hello')
    await until(() => bobConv.messages().length === 1, 10_000, 'bob joined', 'latency')

    const total = Math.round(rate * (seconds + 1))
    const sentAt = new Float64Array(total)
    const arrivedAt = new Float64Array(total)
    let arrived = 0
    let seen = bobConv.messages().length
    // Bob's app: on each change it reads the list, as a UI renders it; new messages append.
    const unsubscribe = bobConv.subscribe(() => {
      const now = performance.now()
      const list = bobConv.messages()
      // New messages append (one sender, sent in order); the last few are looked at again in
      // case one was placed just before the end.
      for (let k = Math.max(0, seen - 64); k < list.length; k++) {
        const text = list[k]!.text
        if (!text.startsWith('#')) continue
        const i = Number.parseInt(text.slice(1, text.indexOf(' ')), 10)
        if (arrivedAt[i] === 0) {
          arrivedAt[i] = now
          arrived++
        }
      }
      seen = list.length
    })
    const pad = 'x'.repeat(80)
    const failures: unknown[] = []
    let sent = 0
    const t0 = performance.now()
    while (sent < total) {
      const due = Math.min(total, Math.floor(((performance.now() - t0) * rate) / 1000) + 1)
      while (sent < due) {
        sentAt[sent] = performance.now()
        conv.send(`#${sent} ${pad}`).catch((err: unknown) => failures.push(err))
        sent++
      }
      await new Promise((r) => setImmediate(r))
    }
    await until(() => arrived === total || failures.length > 0, 60_000, `${total} messages at bob`, 'latency')
    unsubscribe()
    if (failures.length > 0) throw failures[0]
    const lat: number[] = []
    for (let i = Math.min(rate, total - 1); i < total; i++) lat.push(arrivedAt[i]! - sentAt[i]!)
    await alice.close()
    await bob.close()
    return { p50Ms: percentile(lat, 50), p99Ms: percentile(lat, 99), maxMs: Math.max(...lat), messages: lat.length }
  } finally {
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
