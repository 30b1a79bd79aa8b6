/** Shared helpers for the benchmarks: workload parameters, payloads, sockets, child-process protocol. */
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import type { Worker } from 'node:worker_threads'

/** A plain binary `ws` client connection, once open. */
export function openSocket(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false })
    ws.binaryType = 'nodebuffer'
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })
}

/** `count` sockets to `url`, opened `batch` at a time. */
export async function openSockets(url: string, count: number, batch = 100): Promise<WebSocket[]> {
  const out: WebSocket[] = []
  for (let i = 0; i < count; i += batch) out.push(...(await Promise.all(Array.from({ length: Math.min(batch, count - i) }, () => openSocket(url)))))
  return out
}

export interface Workload {
  /** Sender/receiver pairs, each in its own conversation (Petrel) or room (y-websocket). */
  pairs: number
  /** Messages each sender sends. */
  messages: number
  /** Sends fired before yielding to the event loop / awaiting their local durability. */
  batch: number
  /** Bytes of message text. */
  textBytes: number
}

/** What a load-generator child prints as its last stdout line. */
export interface LoadResult {
  system: 'petrel' | 'y-websocket'
  pairs: number
  messages: number
  /** Messages delivered in total (pairs × messages). */
  delivered: number
  /** From the first send until every receiver holds every message. */
  elapsedMs: number
  msgsPerSec: number
  /** Connect, create/join, initial sync (not measured in msgsPerSec). */
  setupMs: number
  /** Time until the last sender's last send resolved (Petrel: durable locally; y-ws: handed to the socket). */
  sendPhaseMs: number
}

export const envInt = (name: string, fallback: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number.parseInt(raw, 10)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`)
  return n
}

export const defaultWorkload = (): Workload => ({
  pairs: envInt('BENCH_PAIRS', 4),
  messages: envInt('BENCH_MESSAGES', 5000),
  batch: envInt('BENCH_BATCH', 50),
  textBytes: envInt('BENCH_TEXT_BYTES', 100),
})

/** Pass the workload to a child through argv (`--key=value`). */
export const workloadArgs = (w: Workload): string[] => [`--pairs=${w.pairs}`, `--messages=${w.messages}`, `--batch=${w.batch}`, `--text-bytes=${w.textBytes}`]

/** Parse `--url=… --pairs=…` from argv. */
export function parseChildArgs(argv: string[]): { url: string; workload: Workload; tag: string; dir: string } {
  const opts = new Map<string, string>()
  for (const a of argv) {
    const m = /^--([a-z-]+)=(.*)$/.exec(a)
    if (m) opts.set(m[1]!, m[2]!)
  }
  const int = (k: string): number => {
    const n = Number.parseInt(opts.get(k) ?? '', 10)
    if (!Number.isFinite(n) || n <= 0) throw new Error(`missing or bad --${k}`)
    return n
  }
  const url = opts.get('url')
  if (!url) throw new Error('missing --url')
  return {
    url,
    tag: opts.get('tag') ?? 'r',
    dir: opts.get('dir') ?? '',
    workload: { pairs: int('pairs'), messages: int('messages'), batch: int('batch'), textBytes: int('text-bytes') },
  }
}

/** A message text of exactly `bytes` ASCII bytes, distinct per sender and index. */
export function payload(pair: number, i: number, bytes: number): string {
  const head = `p${pair} m${i} `
  return head.length >= bytes ? head.slice(0, bytes) : head + 'x'.repeat(bytes - head.length)
}

/** The p-th percentile (nearest rank) of `xs`. */
export const percentile = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}

export const median = (xs: number[]): number => {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** What benchmark 3's receiving devices (latency-receiver.ts, latency-floor-receiver.ts) post back. */
export type ReceiverReply = { kind: 'ready'; tid?: number } | { kind: 'arrived' } | { kind: 'done'; arrivedAt: Float64Array } | { kind: 'failed'; message: string }

/** The receiving worker's thread id, from its 'ready'. */
export const tidOf = (reply: ReceiverReply): number | undefined => (reply.kind === 'ready' ? reply.tid : undefined)

/**
 * A benchmark worker's replies, in order: `next()` waits for the next one. A reply
 * `{ kind: 'failed', message }` or an error event rejects it, with `label` in the message.
 */
export function workerReplies<R extends { kind: string }>(worker: Worker, label: string): () => Promise<R> {
  const replies: Array<R | { kind: 'failed'; message: string }> = []
  let wake: (() => void) | undefined
  worker.on('message', (m: R) => {
    replies.push(m)
    wake?.()
  })
  worker.on('error', (err) => {
    replies.push({ kind: 'failed', message: String(err) })
    wake?.()
  })
  return async () => {
    while (replies.length === 0) await new Promise<void>((r) => (wake = r))
    const reply = replies.shift()!
    if (reply.kind === 'failed') throw new Error(`${label}: the receiving device failed: ${(reply as { message: string }).message}`)
    return reply as R
  }
}

/** One clock for every thread of this process (benchmark 3's devices run on two threads). */
export const wallNow = (): number => performance.timeOrigin + performance.now()
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
export const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

/** Resolve when `check()` is true, re-checking on `subscribe` notifications; reject after `timeoutMs`. */
export function waitFor(check: () => boolean, subscribe: (fn: () => void) => () => void, timeoutMs: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (check()) return resolve()
    let off = (): void => {}
    const timer = setTimeout(() => {
      off()
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
    }, timeoutMs)
    off = subscribe(() => {
      if (!check()) return
      clearTimeout(timer)
      off()
      resolve()
    })
  })
}

/** Child side: report the result as one JSON line on stdout (the parent reads the last line). */
export function reportResult(r: LoadResult): void {
  process.stdout.write(`${JSON.stringify(r)}\n`)
}

/** Child side: progress lines go to stderr so stdout carries only the result. */
export const progress = (msg: string): void => {
  if (process.env.BENCH_VERBOSE) process.stderr.write(`[${process.pid}] ${msg}\n`)
}

/** `env`=file.cpuprofile: profile one benchmark's measured part only (inspector, in process). */
export async function startProfile(env: string, suffix = ''): Promise<(() => Promise<void>) | undefined> {
  const file = process.env[env] ? `${process.env[env]}${suffix}` : undefined
  if (!file) return undefined
  const { Session } = await import('node:inspector/promises')
  const { writeFileSync } = await import('node:fs')
  const session = new Session()
  session.connect()
  if (process.env.BENCH_PROFILE_KIND === 'heap') {
    // Allocation sampling instead (a .heapprofile for DevTools' Memory tab): who allocates, not who runs.
    await session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
    return async () => {
      const { profile } = await session.post('HeapProfiler.stopSampling')
      writeFileSync(file, JSON.stringify(profile))
      session.disconnect()
    }
  }
  await session.post('Profiler.enable')
  // The default 1 ms gives a catch-up round ~250 samples: too few to rank anything under ~10 ms.
  const interval = Number(process.env.BENCH_PROF_INTERVAL_US ?? 0)
  if (interval > 0) await session.post('Profiler.setSamplingInterval', { interval })
  await session.post('Profiler.start')
  return async () => {
    const { profile } = await session.post('Profiler.stop')
    writeFileSync(file, JSON.stringify(profile))
    session.disconnect()
  }
}


/** Poll `check` until it holds; `label` names the benchmark in the timeout error. */
export const until = async (check: () => boolean, timeoutMs: number, what: string, label = 'bench') => {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${label}: timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 2))
  }
}

/**
 * Wait as an app's screen does: check `done` on each change a conversation reports
 * (`subscribe`) and once at the start, not on a timer. A 2-ms poll of `messages()` was ~10 % of
 * a 10,000-message catch-up's profile: the benchmark timing itself, not the device.
 */
export const untilChanged = (conv: { subscribe(listener: () => void): () => void }, done: () => boolean, timeoutMs: number, what: string, label = 'bench') =>
  new Promise<void>((resolve, reject) => {
    let stop = () => {}
    const timer = setTimeout(() => {
      stop()
      reject(new Error(`${label}: timed out waiting for ${what}`))
    }, timeoutMs)
    const check = () => {
      if (!done()) return
      clearTimeout(timer)
      stop()
      resolve()
    }
    stop = conv.subscribe(check)
    check()
  })

/** One counter of a relay's /metrics (Prometheus text) at its WebSocket `url`; 0 when absent. */
export async function relayCounter(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url.replace(/^ws/, 'http')}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return line ? Number(line.slice(name.length + 1)) : 0
}

/** A full garbage collection now (V8's `gc`, exposed for the call). */
export function fullGc(): void {
  setFlagsFromString('--expose-gc')
  ;(runInNewContext('gc') as () => void)()
}

/**
 * Benchmark 3's conversation as a Yjs document: `messages` messages of an 87-character text,
 * 40 to a transaction as a sender's batches are, with a message's stored fields (its id as the
 * key, device, batch entry); and the updates that made it.
 */
export function conversationDoc(messages: number): { doc: Y.Doc; updates: Uint8Array[] } {
  const doc = new Y.Doc()
  const updates: Uint8Array[] = []
  doc.on('update', (u: Uint8Array) => updates.push(u))
  const map = doc.getMap<unknown>('messages')
  const device = 'D'.repeat(43)
  for (let from = 0; from < messages; from += 40) {
    doc.transact(() => {
      for (let i = from; i < Math.min(messages, from + 40); i++) {
        const at = 1_764_540_000_000 + i
        map.set(`${device}.${i.toString(36).padStart(12, '0')}`, { t: `#${i} ${'x'.repeat(80)}`, at, h: at, n: i, d: device, b: `${device}.${from / 40}`, i: i - from })
      }
    })
  }
  return { doc, updates }
}
