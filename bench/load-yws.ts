/**
 * Load generator (child process) for the plain y-websocket reference: the same N
 * sender/receiver pairs as load-petrel, each pair sharing one room (a Y.Doc with a Y.Map keyed
 * by message id, value `{ t, at }`), over `y-websocket`'s WebsocketProvider with the `ws`
 * package. No encryption, no signatures, no persistence anywhere.
 * Prints one JSON `LoadResult` line on stdout.
 *
 * Usage: node dist/bench/load-yws.js --url=ws://… --tag=round1 --pairs=4 --messages=2000 --batch=50 --text-bytes=100
 */
import { performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { type LoadResult, parseChildArgs, payload, progress, reportResult, tick, waitFor } from './common.js'

const SETUP_TIMEOUT_MS = 30_000
const DELIVERY_TIMEOUT_MS = 110_000

interface Side {
  doc: Y.Doc
  provider: WebsocketProvider
  map: Y.Map<{ t: string; at: number }>
}

function side(url: string, room: string): Side {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, {
    WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
    disableBc: true,
  })
  return { doc, provider, map: doc.getMap('messages') }
}

const synced = (s: Side): Promise<void> =>
  waitFor(
    () => s.provider.synced,
    (fn) => {
      s.provider.on('sync', fn)
      return () => s.provider.off('sync', fn)
    },
    SETUP_TIMEOUT_MS,
    'initial sync',
  )

async function main(): Promise<void> {
  const { url, workload, tag } = parseChildArgs(process.argv.slice(2))
  const { pairs: nPairs, messages: M, batch, textBytes } = workload
  const setupStart = performance.now()
  const pairs = Array.from({ length: nPairs }, (_, p) => ({ sender: side(url, `${tag}-pair${p}`), receiver: side(url, `${tag}-pair${p}`) }))
  await Promise.all(pairs.flatMap(({ sender, receiver }) => [synced(sender), synced(receiver)]))
  const setupMs = performance.now() - setupStart
  progress(`y-websocket: ${nPairs} pairs ready in ${setupMs.toFixed(0)} ms`)
  for (const { receiver } of pairs) if (receiver.map.size !== 0) throw new Error('receiver starts with entries')

  const start = performance.now()
  let sendPhaseMs = 0
  const delivered = Promise.all(
    pairs.map(({ receiver }, p) =>
      waitFor(
        () => receiver.map.size >= M,
        (fn) => {
          receiver.map.observe(fn)
          return () => receiver.map.unobserve(fn)
        },
        DELIVERY_TIMEOUT_MS,
        `receiver${p} to hold ${M} entries`,
      ),
    ),
  )
  const sent = Promise.all(
    pairs.map(async ({ sender }, p) => {
      // Same pipelining as Petrel: a batch of separate updates (one transaction each), then yield.
      for (let i = 0; i < M; i += batch) {
        for (let j = i; j < Math.min(M, i + batch); j++) sender.map.set(`p${p}-${j}`, { t: payload(p, j, textBytes), at: Date.now() })
        await tick()
      }
    }),
  ).then(() => {
    sendPhaseMs = performance.now() - start
  })
  await Promise.all([sent, delivered])
  const elapsedMs = performance.now() - start

  const result: LoadResult = {
    system: 'y-websocket',
    pairs: nPairs,
    messages: M,
    delivered: nPairs * M,
    elapsedMs,
    msgsPerSec: (nPairs * M) / (elapsedMs / 1000),
    setupMs,
    sendPhaseMs,
  }
  reportResult(result)
  for (const { sender, receiver } of pairs) {
    for (const s of [sender, receiver]) {
      s.provider.destroy()
      s.doc.destroy()
    }
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`y-websocket load failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(1)
  },
)
