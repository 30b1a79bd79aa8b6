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
 * worker → parent  { kind: 'ready' } | { kind: 'done', arrivedAt: Float64Array } | { kind: 'failed', message }
 * ```
 */
import { parentPort, workerData } from 'node:worker_threads'
import { createClient } from '../src/client/index.js'
import { until } from './common.js'

export interface ReceiverData {
  url: string
  storage: string
  invite: string
  total: number
}

/** One clock for every thread of this process. */
export const wallNow = (): number => performance.timeOrigin + performance.now()

async function receive({ url, storage, invite, total }: ReceiverData): Promise<void> {
  const bob = await createClient({ relay: url, name: 'bob', storage })
  const conv = await bob.join(invite)
  await until(() => conv.messages().length >= 1, 10_000, 'bob joined', 'latency')
  const arrivedAt = new Float64Array(total)
  let arrived = 0
  let seen = conv.messages().length
  // Bob's app: on each change it reads the list, as a UI renders it; new messages append.
  const unsubscribe = conv.subscribe(() => {
    const now = wallNow()
    const list = conv.messages()
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
  parentPort!.postMessage({ kind: 'ready' })
  await until(() => arrived === total, 60_000, `${total} messages at bob`, 'latency')
  unsubscribe()
  await bob.close()
  parentPort!.postMessage({ kind: 'done', arrivedAt })
}

if (parentPort && workerData) {
  receive(workerData as ReceiverData).catch((err: unknown) => parentPort!.postMessage({ kind: 'failed', message: String((err as Error)?.stack ?? err) }))
}
