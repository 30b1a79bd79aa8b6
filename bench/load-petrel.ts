/**
 * Load generator (child process) for Petrel: N sender/receiver client pairs, each pair in its
 * own conversation, against a relay in another process. Every client has its own SQLite file.
 * Prints one JSON `LoadResult` line on stdout.
 *
 * Usage: node dist/bench/load-petrel.js --url=ws://… --dir=/tmp/… --pairs=4 --messages=2000 --batch=50 --text-bytes=100
 */
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { type Conversation, createClient, type PetrelClient } from '../src/client/index.js'
import { type LoadResult, parseChildArgs, payload, progress, reportResult, sleep, waitFor } from './common.js'

const SETUP_TIMEOUT_MS = 30_000
const DELIVERY_TIMEOUT_MS = 110_000

interface Pair {
  sender: Conversation
  receiver: Conversation
}

async function online(client: PetrelClient, what: string): Promise<void> {
  const start = Date.now()
  while (client.connection !== 'online') {
    if (Date.now() - start > SETUP_TIMEOUT_MS) throw new Error(`${what} did not come online`)
    await sleep(5)
  }
}

async function main(): Promise<void> {
  const { url, workload, dir } = parseChildArgs(process.argv.slice(2))
  if (!dir) throw new Error('missing --dir')
  mkdirSync(dir, { recursive: true })
  const { pairs: nPairs, messages: M, batch, textBytes } = workload
  const clients: PetrelClient[] = []
  const errors: string[] = []
  let phase = 'setup'
  const setupStart = performance.now()

  const pairs: Pair[] = await Promise.all(
    Array.from({ length: nPairs }, async (_, p): Promise<Pair> => {
      const a = await createClient({ relay: url, name: `sender${p}`, storage: join(dir, `sender${p}.db`) })
      const b = await createClient({ relay: url, name: `receiver${p}`, storage: join(dir, `receiver${p}.db`) })
      clients.push(a, b)
      for (const [who, c] of [
        [`sender${p}`, a],
        [`receiver${p}`, b],
      ] as const)
        c.on('error', (err) => errors.push(`${who} during ${phase}: ${err.code}: ${err.message}`))
      await Promise.all([online(a, `sender${p}`), online(b, `receiver${p}`)])
      const sender = await a.createConversation({ title: `bench ${p}` })
      const receiver = await b.join(await sender.invite())
      await sender.whenSynced(SETUP_TIMEOUT_MS)
      await receiver.whenSynced(SETUP_TIMEOUT_MS)
      return { sender, receiver }
    }),
  )
  // Conversation setup (profiles, join records) settles before the clock starts.
  await sleep(200)
  const setupMs = performance.now() - setupStart
  progress(`petrel: ${nPairs} pairs ready in ${setupMs.toFixed(0)} ms`)

  // The receiver's view: the decrypted inner document's message map (what messages() lists).
  const received = (c: Conversation): number => c.doc.getMap('messages').size
  for (const { receiver } of pairs) if (received(receiver) !== 0) throw new Error('receiver starts with messages')

  phase = 'load'
  const start = performance.now()
  let sendPhaseMs = 0
  const delivered = Promise.all(
    pairs.map(({ receiver }, p) => waitFor(() => received(receiver) >= M, (fn) => receiver.subscribe(fn), DELIVERY_TIMEOUT_MS, `receiver${p} to hold ${M} messages`)),
  )
  const sent = Promise.all(
    pairs.map(async ({ sender }, p) => {
      // Pipelined: fire a batch of sends, await their local durability, fire the next batch.
      for (let i = 0; i < M; i += batch) {
        const inFlight: Promise<unknown>[] = []
        for (let j = i; j < Math.min(M, i + batch); j++) inFlight.push(sender.send(payload(p, j, textBytes)))
        await Promise.all(inFlight)
      }
    }),
  ).then(() => {
    sendPhaseMs = performance.now() - start
    progress(`petrel: all sends durable locally after ${sendPhaseMs.toFixed(0)} ms`)
  })
  // BENCH_VERBOSE: delivered count every 5 s, to see whether the rate holds up during a round.
  const ticker = setInterval(() => {
    const n = pairs.reduce((sum, { receiver }) => sum + received(receiver), 0)
    progress(`petrel: ${n} delivered after ${(performance.now() - start).toFixed(0)} ms`)
  }, 5000)
  ticker.unref()
  if (!process.env.BENCH_VERBOSE) clearInterval(ticker)
  await Promise.all([sent, delivered])
  clearInterval(ticker)
  const elapsedMs = performance.now() - start

  for (const [p, { receiver }] of pairs.entries()) {
    const n = receiver.messages().length
    if (n !== M) throw new Error(`receiver${p} lists ${n} messages, expected ${M}`)
  }
  if (errors.length > 0) process.stderr.write(`petrel load: ${errors.length} client error(s):\n  ${errors.slice(0, 5).join('\n  ')}\n`)

  const result: LoadResult = {
    system: 'petrel',
    pairs: nPairs,
    messages: M,
    delivered: nPairs * M,
    elapsedMs,
    msgsPerSec: (nPairs * M) / (elapsedMs / 1000),
    setupMs,
    sendPhaseMs,
  }
  reportResult(result)
  await Promise.race([Promise.allSettled(clients.map((c) => c.close())), sleep(10_000)])
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`petrel load failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(1)
  },
)
