/**
 * A copy of a conversation's inner document on a worker thread, kept up to date with every
 * update this device stores, so a history snapshot is encoded there and not on the thread the
 * app runs on. `Y.encodeStateAsUpdate` of 20,000 messages took ~60 ms and of 40,000 ~120 ms of
 * the main thread at each snapshot (then every 5,000 messages): at 10,000 sends a second that
 * stall set the tail.
 *
 * The copy is fed what the conversation commits to its local log (every inner update it applies
 * reaches the log; the log is what the document is rebuilt from on the next start), so it holds
 * what the document holds. Yjs updates are idempotent and commute: the copy may be fed an
 * update twice, or get one before those it depends on, and still converge. A snapshot taken from
 * it is checked against the document's state vector before it is used (snapshot-source.ts).
 *
 * Node only (worker_threads, reached through `process.getBuiltinModule` so a browser bundle
 * imports nothing of Node's): elsewhere `openHistoryReplica` returns undefined and snapshots
 * are encoded in place, as before. One thread per process, started on first use; it never
 * keeps the process alive while nothing is asked of it.
 *
 * Messages (structured clone; byte arrays are copies of their own, transferred):
 * ```
 * main → worker  { kind: 'open', id } | { kind: 'apply', id, bytes: Uint8Array, lengths: number[] }
 *              | { kind: 'encode', id, seq, deflate: boolean } | { kind: 'close', id }
 * worker → main  { seq, ok: true, state, stateVector }                      (deflate false)
 *              | { seq, ok: true, deflated, length, stateVector }          (deflate true: raw DEFLATE of the state, and its length)
 *              | { seq, ok: false, error: string }
 * ```
 * `deflate` has the thread compress the state as well (zlib level 1, snapshot-deflate.ts's
 * format), so the app's thread never holds the whole state: at 60,000 messages it was 23 MB,
 * and with the compressor's buffers and the sealed copies a snapshot allocated ~100 MB there
 * in a few hundred ms. V8 answers external memory growing that fast with full mark-compacts,
 * whose final pauses (48–88 ms at 170–215 MB heaps) were the worst of the 10,000/s tail. This
 * alone did not remove them (Yjs and the provider still copy each part; BENCHMARKS.md,
 * fifteenth session), but it is ~30 MB a snapshot the app's thread no longer allocates.
 * `apply` carries updates end to end in one transferred buffer, `lengths` saying where each
 * ends. Updates are gathered on this side and posted every 50 ms, at 1 MB, or before an
 * encode: a message per commit was ~40 µs of `postMessage` each (5 µs a message sent at
 * 10,000 a second). A failed apply poisons that copy: its next encode answers with the failure.
 *
 * The thread encodes with state-encoder.ts's `encodeInPlace`: Yjs's bytes, its strings written
 * by var-string.ts and into one buffer the thread keeps from snapshot to snapshot (0.36–0.55 ×
 * `Y.encodeStateAsUpdate`'s time at 40,000 messages, `BENCH_ONLY=stateEncode`). It applies
 * updates with update-reader.ts's `applyUpdate` (Yjs's reading, short strings read by
 * var-string.ts). The factories of those modules are passed in as source text, with the paths
 * of the CommonJS Yjs and lib0 they run against.
 */
import type { DeflatedState } from '../shared/snapshot-seal.js'
import { stateEncoderFor } from '../shared/state-encoder.js'
import { updateApplierFor } from '../shared/update-reader.js'
import { type Lib0Decoding, type Lib0Encoding, lib0StringReaders, lib0StringWriters } from '../shared/var-string.js'

/** A copy of one inner document on the replica thread. */
export interface HistoryReplica {
  /** Updates applied to (or stored for) the document, in any order; held until posted (50 ms at most), so the caller must not change them. */
  apply(updates: readonly Uint8Array[]): void
  /** The copy's whole state as one update (as `Y.encodeStateAsUpdate`) and its state vector. */
  encode(): Promise<{ state: Uint8Array; stateVector: Uint8Array }>
  /** As `encode`, the state raw-DEFLATEd on the thread (`length`: the state's own length). */
  encodeDeflated(): Promise<DeflatedState & { stateVector: Uint8Array }>
  /** Drops the copy. */
  close(): void
}

type Request =
  | { kind: 'open'; id: number }
  | { kind: 'apply'; id: number; bytes: Uint8Array; lengths: number[] }
  | { kind: 'encode'; id: number; seq: number; deflate: boolean }
  | { kind: 'close'; id: number }
type Encoded = { state: Uint8Array; stateVector: Uint8Array } | (DeflatedState & { stateVector: Uint8Array })
type Reply = ({ seq: number; ok: true } & Encoded) | { seq: number; ok: false; error: string }

interface WorkerLike {
  postMessage(message: unknown, transfer?: ArrayBuffer[]): void
  on(event: 'message', f: (reply: Reply) => void): void
  on(event: 'error' | 'exit', f: (arg: unknown) => void): void
  ref(): void
  unref(): void
  terminate(): Promise<number>
}
interface NodeBuiltins {
  Worker: new (source: string, options: { eval: true }) => WorkerLike
  createRequire(url: string): { resolve(id: string): string }
}

/* c8 ignore start -- runs inside the worker, from its source text */
function replicaMain(
  require: (id: string) => unknown,
  yjsPath: string,
  lib0EncodingPath: string,
  lib0DecodingPath: string,
  writersFor: typeof lib0StringWriters,
  encoderFor: typeof stateEncoderFor,
  readersFor: typeof lib0StringReaders,
  applierFor: typeof updateApplierFor,
): void {
  const Y = require(yjsPath) as typeof import('yjs')
  type Doc = InstanceType<typeof Y.Doc>
  // Snapshots are this thread's biggest work: written as Y.encodeStateAsUpdate writes them, faster (state-encoder.ts).
  const { encodeInPlace } = encoderFor(Y, writersFor(require(lib0EncodingPath) as Lib0Encoding))
  // And applying every update again is the rest of it: read as Y.applyUpdate reads, faster (update-reader.ts).
  const applyUpdate = applierFor(Y, readersFor(require(lib0DecodingPath) as Lib0Decoding))
  const { parentPort } = require('node:worker_threads') as { parentPort: { on(e: 'message', f: (m: Request) => void): void; postMessage(m: unknown, t?: ArrayBuffer[]): void } }
  const zlib = require('node:zlib') as { deflateRawSync(buf: Uint8Array, options: { level: number }): Uint8Array }
  const docs = new Map<number, Doc>()
  const broken = new Map<number, string>()
  const own = (bytes: Uint8Array) => (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice())
  parentPort.on('message', (m) => {
    if (m.kind === 'open') docs.set(m.id, new Y.Doc())
    else if (m.kind === 'close') {
      docs.get(m.id)?.destroy()
      docs.delete(m.id)
      broken.delete(m.id)
    } else if (m.kind === 'apply') {
      const doc = docs.get(m.id)
      if (!doc || broken.has(m.id)) return
      try {
        doc.transact(() => {
          let at = 0
          for (const length of m.lengths) {
            applyUpdate(doc, m.bytes.subarray(at, at + length))
            at += length
          }
        })
      } catch (err) {
        broken.set(m.id, String((err as { message?: unknown })?.message ?? err))
      }
    } else {
      const doc = docs.get(m.id)
      const failure = broken.get(m.id) ?? (doc ? undefined : 'no such copy')
      if (failure !== undefined || !doc) {
        parentPort.postMessage({ seq: m.seq, ok: false, error: failure })
        return
      }
      try {
        // A view of the thread's own buffer: deflated or copied out before the next encode.
        const encoded = encodeInPlace(doc)
        const stateVector = own(Y.encodeStateVector(doc))
        if (m.deflate) {
          // Level 1, as snapshot-deflate.ts: on a snapshot's repetitive bytes the ratio of level 6 at 2.5× the speed.
          const deflated = own(zlib.deflateRawSync(encoded, { level: 1 }))
          parentPort.postMessage({ seq: m.seq, ok: true, deflated, length: encoded.length, stateVector }, [deflated.buffer as ArrayBuffer, stateVector.buffer as ArrayBuffer])
        } else {
          // A copy always: the view may span the whole buffer, and a transfer would take the buffer with it.
          const state = encoded.slice()
          parentPort.postMessage({ seq: m.seq, ok: true, state, stateVector }, [state.buffer as ArrayBuffer, stateVector.buffer as ArrayBuffer])
        }
      } catch (err) {
        parentPort.postMessage({ seq: m.seq, ok: false, error: String((err as { message?: unknown })?.message ?? err) })
      }
    }
  })
}
/* c8 ignore stop */

const builtins = ((): NodeBuiltins | undefined => {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
    const threads = proc?.getBuiltinModule?.('node:worker_threads') as { Worker?: NodeBuiltins['Worker'] } | undefined
    const mod = proc?.getBuiltinModule?.('node:module') as { createRequire?: NodeBuiltins['createRequire'] } | undefined
    if (!threads?.Worker || !mod?.createRequire) return undefined
    return { Worker: threads.Worker, createRequire: mod.createRequire }
  } catch {
    return undefined
  }
})()

class ReplicaThread {
  private readonly worker: WorkerLike
  private readonly waiting = new Map<number, { resolve: (r: Encoded) => void; reject: (e: Error) => void }>()
  failure: Error | undefined
  private seq = 0
  private opened = 0

  constructor(node: NodeBuiltins) {
    const yjsPath = node.createRequire(import.meta.url).resolve('yjs')
    // The lib0 that copy of Yjs itself loads.
    const lib0 = node.createRequire(yjsPath)
    const paths = [yjsPath, lib0.resolve('lib0/encoding'), lib0.resolve('lib0/decoding')].map((p) => JSON.stringify(p))
    const args = [...paths, lib0StringWriters.toString(), stateEncoderFor.toString(), lib0StringReaders.toString(), updateApplierFor.toString()]
    const source = `var __name = (f) => f;\n(${replicaMain.toString()})(require, ${args.join(', ')})`
    this.worker = new node.Worker(source, { eval: true })
    this.worker.unref()
    this.worker.on('message', (reply: Reply) => {
      const w = this.waiting.get(reply.seq)
      this.waiting.delete(reply.seq)
      if (this.waiting.size === 0) this.worker.unref()
      if (!reply.ok) w?.reject(new Error(reply.error))
      else {
        const { seq: _seq, ok: _ok, ...encoded } = reply
        w?.resolve(encoded)
      }
    })
    const died = (err: unknown) => {
      this.failure = new Error(`history replica thread stopped: ${err instanceof Error ? err.message : String(err)}`)
      if (thread === this) thread = undefined
      for (const w of this.waiting.values()) w.reject(this.failure)
      this.waiting.clear()
    }
    this.worker.on('error', died)
    this.worker.on('exit', (code) => died(new Error(`exit code ${String(code)}`)))
  }

  open(): HistoryReplica {
    const id = ++this.opened
    this.post({ kind: 'open', id })
    let pending: Uint8Array[] = []
    let pendingBytes = 0
    let timer: ReturnType<typeof setTimeout> | undefined
    const flush = () => {
      clearTimeout(timer)
      timer = undefined
      if (pending.length === 0) return
      const bytes = new Uint8Array(pendingBytes)
      const lengths = new Array<number>(pending.length)
      let at = 0
      pending.forEach((u, i) => {
        bytes.set(u, at)
        at += u.length
        lengths[i] = u.length
      })
      pending = []
      pendingBytes = 0
      this.post({ kind: 'apply', id, bytes, lengths }, [bytes.buffer])
    }
    return {
      apply: (updates) => {
        if (updates.length === 0) return
        // Held by reference until posted: the caller's arrays are not changed after a commit.
        for (const u of updates) {
          pending.push(u)
          pendingBytes += u.length
        }
        if (pendingBytes >= FLUSH_BYTES) flush()
        else if (timer === undefined) {
          timer = setTimeout(flush, FLUSH_MS)
          // Never what keeps a process alive.
          ;(timer as { unref?: () => void }).unref?.()
        }
      },
      encode: async () => {
        flush()
        const r = await this.request(id, false)
        if (!('state' in r)) throw new Error('history replica: answered an encode with deflated bytes')
        return r
      },
      encodeDeflated: async () => {
        flush()
        const r = await this.request(id, true)
        if (!('deflated' in r)) throw new Error('history replica: answered a deflated encode with the state')
        return r
      },
      close: () => {
        flush()
        this.post({ kind: 'close', id })
      },
    }
  }

  /** Stops the thread (tests: what a crashed thread leaves behind). */
  terminate(): Promise<number> {
    return this.worker.terminate()
  }

  private post(message: Request, transfer: ArrayBuffer[] = []): void {
    if (this.failure) return
    try {
      this.worker.postMessage(message, transfer)
    } catch (err) {
      this.failure = err instanceof Error ? err : new Error(String(err))
    }
  }

  private request(id: number, deflate: boolean): Promise<Encoded> {
    if (this.failure) return Promise.reject(this.failure)
    const seq = ++this.seq
    return new Promise((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject })
      // Kept alive while an answer is awaited.
      this.worker.ref()
      this.post({ kind: 'encode', id, seq, deflate })
      if (this.failure) {
        this.waiting.delete(seq)
        reject(this.failure)
      }
    })
  }
}

let thread: ReplicaThread | undefined
/** Updates are posted to the thread at most this long after they were stored… */
const FLUSH_MS = 50
/** …or once this many bytes wait. */
const FLUSH_BYTES = 1024 * 1024
let disabled = false

/**
 * A new copy of an inner document on the process's replica thread, or undefined where there is
 * no such thread (browsers) or it could not start.
 *
 * @example
 * ```ts
 * const replica = openHistoryReplica()
 * replica?.apply([update])                    // every update the document gets, in any order
 * const { state } = await replica!.encode()   // as Y.encodeStateAsUpdate(doc), off this thread
 * const { deflated, length } = await replica!.encodeDeflated()   // the same, raw-DEFLATEd there too
 * ```
 */
export function openHistoryReplica(): HistoryReplica | undefined {
  if (!builtins || disabled) return undefined
  try {
    thread ??= new ReplicaThread(builtins)
    return thread.open()
  } catch {
    return undefined
  }
}

/**
 * A copy that starts from `seed` (what is stored already): updates given to `apply` before the
 * seed is in are held and posted after it. Posted first, each would wait in Yjs for the history
 * it builds on, and Yjs merges what waits with every later update (`mergeUpdatesV2` over the
 * growing remainder): 123 applies merged up to 400 KB each, 0.9 s of the thread's 3.7 s in a
 * 10,000/s run of benchmark 3. `seeded` settles once the seed is posted (rejects with the seed's
 * failure; the held updates are then dropped, later ones too, and the copy should be).
 *
 * @example
 * ```ts
 * const { copy, seeded } = seedReplica(openHistoryReplica()!, () => store.loadLog(id, 'inner').then((rows) => rows.map((r) => r.bytes)))
 * copy.apply([update])   // held until the seed is posted
 * await seeded
 * ```
 */
export function seedReplica(copy: HistoryReplica, seed: () => Promise<Uint8Array[]>): { copy: HistoryReplica; seeded: Promise<void> } {
  let held: Uint8Array[] | undefined = []
  let failed = false
  const seeded = seed().then(
    (stored) => {
      copy.apply(stored)
      copy.apply(held!)
      held = undefined
    },
    (err: unknown) => {
      // Without its seed the copy would never hold the history: it takes nothing more.
      held = undefined
      failed = true
      throw err
    },
  )
  return {
    copy: {
      apply: (updates) => {
        if (held) held.push(...updates)
        else if (!failed) copy.apply(updates)
      },
      encode: () => copy.encode(),
      encodeDeflated: () => copy.encodeDeflated(),
      close: () => copy.close(),
    },
    seeded,
  }
}

/** Where snapshots are encoded: 'thread' (Node) or 'inline' (browsers, or turned off). */
export const historyEncoder = (): 'thread' | 'inline' => (builtins && !disabled ? 'thread' : 'inline')

/** @internal Tests only: turn the replica thread off (false) or on again, as in a browser. */
export function setHistoryReplicas(on: boolean): void {
  disabled = !on
}

/** @internal Tests only: stop the replica thread as a crash would. */
export async function crashHistoryReplicaThread(): Promise<void> {
  const t = thread
  if (!t) return
  await t.terminate()
}
