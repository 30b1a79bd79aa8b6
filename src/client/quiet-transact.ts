/**
 * A Yjs transaction whose update the caller already holds as bytes, run without Yjs encoding
 * that update again.
 *
 * Yjs encodes every transaction's update for its `'update'` listeners before any listener can
 * look at the origin. For a batch of received updates that work is thrown away: our listener
 * ignores remote origins, and the local log stores the received updates themselves. On a
 * catch-up of 10,000 messages it was 45 ms of ~440, plus the garbage it made.
 *
 * The encoding is skipped only for the one transaction this call opens, only when `skip()`
 * still agrees at its end, and only when every `'update'` listener is one of `ours`: an app
 * listening to `conv.doc` gets its update exactly as before. Transactions an observer starts in
 * reaction (an app writing from an observer) are cleaned up after ours and find their listeners
 * back in place.
 *
 * It relies on lib0's Observable keeping listeners in `_observers` (name → Set), as yjs 13.6
 * does; where that is missing it falls back to a plain transaction (and says so by returning
 * false). `test/unit/quiet-transact.test.ts` fails if yjs stops honouring it.
 */
import * as Y from 'yjs'

type Observers = Map<string, Set<unknown>>

/**
 * Run `fn` in one transaction with `origin`; returns whether Yjs skipped encoding its update
 * (the `'update'` event did not fire for it).
 *
 * @example
 * ```ts
 * const applied: Uint8Array[] = []
 * const quiet = transactWithoutUpdate(doc, REMOTE, new Set([onUpdate]), () => true, () => {
 *   for (const u of received) { Y.applyUpdate(doc, u, REMOTE); applied.push(u) }
 * })
 * store(quiet ? applied : capturedFromUpdateEvent)
 * ```
 */
export function transactWithoutUpdate(
  doc: Y.Doc,
  origin: unknown,
  ours: ReadonlySet<unknown>,
  skip: () => boolean,
  fn: () => void,
  /** false for changes from elsewhere, as `Y.applyUpdate` marks them (Yjs then checks for a clashing client id). */
  local = true,
): boolean {
  const observers = (doc as unknown as { _observers?: unknown })._observers
  if (!(observers instanceof Map)) {
    Y.transact(doc, fn, origin, local)
    return false
  }
  const map = observers as Observers
  let mine: Y.Transaction | undefined
  let stashed: Set<unknown> | undefined
  let skipped = false
  const restore = () => {
    if (!stashed) return
    // A listener added while ours were out joins them, after them.
    for (const f of map.get('update') ?? []) stashed.add(f)
    map.set('update', stashed)
    stashed = undefined
  }
  // Emitted just before Yjs decides whether to encode: the last moment to step aside.
  const onCleanup = (tr: Y.Transaction) => {
    restore()
    if (tr !== mine || !skip()) return
    const listeners = map.get('update')
    // No listener at all: Yjs encodes nothing either, and the caller keeps what it applied.
    if (!listeners) {
      skipped = true
      return
    }
    for (const f of listeners) if (!ours.has(f)) return
    stashed = listeners
    map.delete('update')
    skipped = true
  }
  // Only a transaction this call opens is ours: called inside another one, `fn` joins it, no
  // 'beforeTransaction' fires, and nothing is skipped.
  let opening = true
  const onBegin = (tr: Y.Transaction) => {
    if (opening) mine = tr
  }
  doc.on('beforeTransaction', onBegin)
  doc.on('afterTransactionCleanup', onCleanup)
  doc.on('beforeObserverCalls', restore)
  doc.on('afterAllTransactions', restore)
  try {
    Y.transact(
      doc,
      () => {
        opening = false
        fn()
      },
      origin,
      local,
    )
  } finally {
    restore()
    doc.off('beforeTransaction', onBegin)
    doc.off('afterTransactionCleanup', onCleanup)
    doc.off('beforeObserverCalls', restore)
    doc.off('afterAllTransactions', restore)
  }
  return skipped
}

/**
 * The log rows a receive batch stores: the updates as received when Yjs did not encode the
 * transaction (`quiet`); otherwise Yjs's encoding, plus the received updates when some of them
 * still wait in Yjs for predecessors. The encoding leaves waiting parts out, and the quiet
 * batch that later integrates them stores only its own updates: without the received ones
 * here, those parts would never reach the log.
 *
 * @example
 * ```ts
 * store(rowsToStore(quiet, receivedUpdates, capturedFromUpdateEvent, doc))
 * ```
 */
export function rowsToStore(quiet: boolean, received: Uint8Array[], encoded: Uint8Array[], doc: Y.Doc): Uint8Array[] {
  if (quiet) return received
  if (doc.store.pendingStructs !== null || doc.store.pendingDs !== null) return [...encoded, ...received]
  return encoded
}
