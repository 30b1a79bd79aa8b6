/**
 * Whether the page is in a background tab. Browsers run a hidden page's timers at most about
 * once a second (Chrome, Firefox and Safari alike), so work that only waits a few milliseconds
 * for company (a commit lingering for the next one, an acknowledgement coalescing with the
 * next) would wait a second there instead, and the sender's ✓✓ with it. A hidden page does
 * that work at once. Outside a browser (no `document`) the page is never hidden.
 */

interface VisibilityDocument {
  visibilityState?: string
  addEventListener?(type: 'visibilitychange', listener: () => void): void
  removeEventListener?(type: 'visibilitychange', listener: () => void): void
}

const pageDocument = (): VisibilityDocument | undefined => (globalThis as { document?: VisibilityDocument }).document

/**
 * True in a hidden (background) tab.
 *
 * @example if (pageHidden()) flushNow()
 */
export function pageHidden(): boolean {
  return pageDocument()?.visibilityState === 'hidden'
}

/**
 * Calls `fn` each time the page becomes hidden; returns what stops it. Nothing happens where
 * there is no `document`.
 *
 * @example const stop = whenPageHides(() => group.hurry()); … stop()
 */
export function whenPageHides(fn: () => void): () => void {
  const d = pageDocument()
  if (typeof d?.addEventListener !== 'function') return () => {}
  const listener = () => {
    if (pageHidden()) fn()
  }
  d.addEventListener('visibilitychange', listener)
  return () => d.removeEventListener?.('visibilitychange', listener)
}

/**
 * Runs `fn` after `ms`, or, in a hidden page, in a microtask (see above). Returns what cancels it.
 *
 * @example const cancel = afterUnlessHidden(50, sendAck)
 */
export function afterUnlessHidden(ms: number, fn: () => void): () => void {
  if (pageHidden()) {
    let cancelled = false
    queueMicrotask(() => {
      if (!cancelled) fn()
    })
    return () => {
      cancelled = true
    }
  }
  const timer = setTimeout(fn, ms)
  return () => clearTimeout(timer)
}
