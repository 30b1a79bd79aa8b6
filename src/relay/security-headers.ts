/**
 * Response headers that keep the demo app and the relay's pages from being framed, sniffed or
 * made to load anything from elsewhere. The app is a single origin: its scripts, styles and
 * the relay's WebSocket are all served from here, so the policy names nothing else.
 */
import type { MiddlewareHandler } from 'hono'

/**
 * The app's policy. `'self'` in `connect-src` covers the relay's own ws:/wss: (CSP Level 3).
 * `img-src data:` is for the inline icon of index.html.
 */
export const APP_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "worker-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ')

/** The landing page shown before the app is built: one inline style sheet, nothing else. */
export const LANDING_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/**
 * Adds the headers to every response; a route may set its own `Content-Security-Policy` first.
 *
 * @example
 * ```ts
 * app.use('*', securityHeaders())
 * ```
 */
export function securityHeaders(): MiddlewareHandler {
  return async (c, next) => {
    await next()
    const h = c.res.headers
    // Bytes the relay hands back (a link mailbox's, chosen by whoever PUT them) are never run as a page.
    h.set('X-Content-Type-Options', 'nosniff')
    h.set('X-Frame-Options', 'DENY')
    h.set('Referrer-Policy', 'no-referrer')
    if (!h.has('Content-Security-Policy')) h.set('Content-Security-Policy', APP_CSP)
  }
}
