/**
 * The receiving device of benchmark 3 (latency-clients.ts), on a thread of its own: two
 * devices do not share a CPU, and on one thread the sender's and the receiver's work queued
 * behind each other (at 10,000 msgs/s both together needed more than one core).
 *
 * It joins from the invite it is given, records for each message `#i …` the time of the first
 * `subscribe` callback after which its list holds it (`performance.timeOrigin + now()`: one
 * clock for every thread of the process), and posts the times back once all have arrived.
 *
 * ```
 * parent → worker  workerData { url, storage, invite, total }
 * worker → parent  { kind: 'ready', tid } (tid: its Linux thread id, for BENCH_THREADS) | { kind: 'arrived' } (all shown; it closes next)
 *                  | { kind: 'done', arrivedAt: Float64Array } | { kind: 'failed', message }
 * ```
 */
import { parentPort, workerData } from 'node:worker_threads'
import { createClient } from '../src/client/index.js'
import { until, wallNow } from './common.js'
import { ownThreadId } from './thread-times.js'

export interface ReceiverData {
  url: string
  storage: string
  invite: string
  total: number
}

/**
 * Extra `createClient` options for both devices, from `BENCH_CLIENT_OPTIONS` (JSON), for
 * diagnosis: `BENCH_CLIENT_OPTIONS='{"compaction":false}'` measures without history snapshots.
 * A figure measured so is not benchmark 3's.
 */
export const clientOptions = (): Record<string, unknown> => JSON.parse(process.env.BENCH_CLIENT_OPTIONS ?? '{}') as Record<string, unknown>

async function receive({ url, storage, invite, total }: ReceiverData): Promise<void> {
  const bob = await createClient({ relay: url, name: 'bob', storage, ...clientOptions() })
  const conv = await bob.join(invite)
  await until(() => conv.messages().length >= 1, 10_000, 'bob joined', 'latency')
  const arrivedAt = new Float64Array(total)
  let arrived = 0
  let highest = -1
  const indexOf = (text: string): number => (text.startsWith('#') ? Number.parseInt(text.slice(1, text.indexOf(' ')), 10) : -1)
  // Bob's app: on each change it reads the newest messages, as a chat screen renders them
  // (`lastMessages`, not the array of all 40,000 that `messages()` builds per change). New
  // messages append (one sender, sent in order): the tail read reaches back to the newest
  // message seen before, however many came at once.
  const unsubscribe = conv.subscribe(() => {
    const now = wallNow()
    let n = 64
    let tail = conv.lastMessages(n)
    while (tail.length === n && indexOf(tail[0]!.text) > highest) {
      n *= 2
      tail = conv.lastMessages(n)
    }
    for (const m of tail) {
      const i = indexOf(m.text)
      if (i >= 0 && arrivedAt[i] === 0) {
        arrivedAt[i] = now
        arrived++
        if (i > highest) highest = i
      }
    }
  })
  parentPort!.postMessage({ kind: 'ready', tid: ownThreadId() })
  await until(() => arrived === total, 60_000, `${total} messages at bob`, 'latency')
  // Before closing: the sender reads the CPU used until now (closing compacts the history).
  parentPort!.postMessage({ kind: 'arrived' })
  unsubscribe()
  await bob.close()
  parentPort!.postMessage({ kind: 'done', arrivedAt })
}

if (parentPort && workerData) {
  receive(workerData as ReceiverData).catch((err: unknown) => parentPort!.postMessage({ kind: 'failed', message: String((err as Error)?.stack ?? err) }))
}
