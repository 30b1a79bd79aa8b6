/**
 * Shared by the SQLite and IndexedDB stores: argument checks and same-tick grouping of commits.
 * Grouping exists because each durable commit pays one fsync (or IDB flush); a message per
 * transaction is several times slower than folding everything that arrived together into one.
 */
import { ErrorCode, PetrelError } from '../../shared/errors.js'
import type { Batch } from './device-store.js'

interface Pending {
  batch: Batch
  resolve: () => void
  reject: (err: unknown) => void
  /** May wait for company (CommitOptions.soon), and since when. */
  soon: boolean
  at: number
}

/** Runs batches through `write`, folding calls that arrive together into one `write`. */
export interface CommitGroup {
  /**
   * Queues `batch`; resolves once the transaction holding it has committed. Values are read when
   * the group is written (a microtask later at the earliest), so do not mutate them before then.
   * `soon`: while every queued batch is `soon`, the group waits until the oldest has waited
   * `lingerMs` (an ordinary commit ends the wait at once).
   */
  commit(batch: Batch, soon?: boolean): Promise<void>
  /** Settles once every commit accepted so far has settled (lingering ones go at once). */
  drain(): Promise<void>
  /** Ends a linger now if `mayLinger` says no more (the page was just hidden). */
  hurry(): void
}

/** How long a `soon` commit waits for company, by default. */
export const COMMIT_LINGER_MS = 20

/**
 * Creates a commit group. `write` must apply all batches atomically in the given order, or throw
 * and apply none; a throw rejects every caller whose batch was in that group, because one
 * transaction cannot keep some callers' writes and drop others'. Groups never overlap: batches
 * arriving while a group is being written form the next group.
 *
 * @example
 * ```ts
 * const group = createCommitGroup((batches) => db.transaction(() => batches.forEach(apply))())
 * await Promise.all([group.commit(a), group.commit(b)]) // one transaction
 * ```
 */
export function createCommitGroup(
  write: (batches: readonly Batch[]) => void | Promise<void>,
  lingerMs = COMMIT_LINGER_MS,
  /** Asked before each wait: false writes `soon` commits at once (a hidden page, page-visibility.ts). */
  mayLinger: () => boolean = () => true,
): CommitGroup {
  let queue: Pending[] = []
  let running: Promise<void> | undefined
  /** Ends a linger early: an ordinary commit came, or the store drains. */
  let wake: (() => void) | undefined
  let draining = 0

  const linger = async (): Promise<void> => {
    for (;;) {
      if (draining > 0 || queue.length === 0 || !queue.every((p) => p.soon) || !mayLinger()) return
      const wait = queue[0]!.at + lingerMs - performance.now()
      if (wait <= 0) return
      let timer: ReturnType<typeof setTimeout> | undefined
      // Not unref'd: a process must not exit with a commit it accepted still unwritten.
      await new Promise<void>((r) => {
        wake = r
        timer = setTimeout(r, wait)
      })
      clearTimeout(timer)
      wake = undefined
    }
  }

  const loop = async (): Promise<void> => {
    // One microtask lets every commit issued synchronously after the first one join its group.
    await Promise.resolve()
    while (queue.length > 0) {
      await linger()
      const group = queue
      queue = []
      try {
        await write(group.map((p) => p.batch))
        for (const p of group) p.resolve()
      } catch (err) {
        for (const p of group) p.reject(err)
      }
    }
    running = undefined
  }

  return {
    commit: (batch, soon = false) =>
      new Promise<void>((resolve, reject) => {
        queue.push({ batch, resolve, reject, soon, at: performance.now() })
        if (!soon) wake?.()
        running ??= loop()
      }),
    hurry: () => wake?.(),
    drain: async () => {
      draining++
      try {
        wake?.()
        while (running) await running
      } finally {
        draining--
      }
    },
  }
}

const invalid = (message: string): PetrelError => new PetrelError(ErrorCode.InvalidArgument, message)

const isDoc = (doc: unknown): boolean => doc === 'outer' || doc === 'inner'

/**
 * Throws PetrelError(invalid_argument) when `batch` is malformed. Checked before a batch joins a
 * group, so one caller's bad argument cannot fail the other callers of the same transaction.
 */
export function validateBatch(batch: Batch): void {
  if (typeof batch !== 'object' || batch === null) throw invalid('commit: batch must be an object')
  const { put, append, compact } = batch
  if (put !== undefined) {
    if (!Array.isArray(put)) throw invalid('commit: batch.put must be an array')
    for (const entry of put) {
      if (!Array.isArray(entry) || typeof entry[0] !== 'string') {
        throw invalid('commit: batch.put entries must be [key: string, value]')
      }
      if (entry[1] !== null && !(entry[1] instanceof Uint8Array)) {
        throw invalid(`commit: value of key ${JSON.stringify(entry[0])} must be a Uint8Array or null`)
      }
    }
  }
  if (append !== undefined) {
    if (!Array.isArray(append)) throw invalid('commit: batch.append must be an array')
    for (const op of append) {
      if (typeof op?.convId !== 'string' || !isDoc(op.doc) || !(op.bytes instanceof Uint8Array)) {
        throw invalid("commit: append ops need convId: string, doc: 'outer' | 'inner', bytes: Uint8Array")
      }
    }
  }
  if (compact !== undefined) {
    if (!Array.isArray(compact)) throw invalid('commit: batch.compact must be an array')
    for (const op of compact) {
      if (
        typeof op?.convId !== 'string' ||
        !isDoc(op.doc) ||
        !Number.isSafeInteger(op.throughId) ||
        op.throughId < 1 ||
        !(op.merged instanceof Uint8Array)
      ) {
        throw invalid(
          "commit: compact ops need convId: string, doc: 'outer' | 'inner', throughId: positive integer, merged: Uint8Array",
        )
      }
    }
  }
}

/** Error for a compaction that has no rows to replace; always a caller bug, never data loss. */
export const nothingToCompact = (convId: string, doc: string, throughId: number): PetrelError =>
  new PetrelError(ErrorCode.InvalidArgument, `commit: no log rows of ${convId}/${doc} with id <= ${throughId} to compact`, {
    conversationId: convId,
  })
