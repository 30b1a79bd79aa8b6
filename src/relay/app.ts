/**
 * The relay's Hono app: its HTTP routes (health, readiness, metrics, the link mailbox, the
 * demo app). Exported so an operator can mount it in their own server; WebSocket upgrades are
 * not Hono's: hand the same server to `acceptWebSockets` (upgrade.ts).
 */
import { existsSync } from 'node:fs'
import { join, relative, sep } from 'node:path'
import { serveStatic } from '@hono/node-server/serve-static'
import { Hono, type MiddlewareHandler } from 'hono'
import { mountLinkRoutes } from './link-mailbox.js'
import type { RelayCore } from './relay-core.js'
import { LANDING_CSP, securityHeaders } from './security-headers.js'

/**
 * @param options.staticRoot a built web app (a directory with index.html) served at `/`; the
 * landing page is shown instead while it does not exist.
 */
export function createRelayApp(core: RelayCore, options: { staticRoot?: string } = {}): Hono {
  const app = new Hono()
  app.onError((err, c) => {
    core.log.error('http error', { path: c.req.path, error: err.message })
    return c.json({ error: 'internal error' }, 500)
  })
  app.use('*', securityHeaders())
  app.get('/healthz', (c) => c.json({ ok: true }))
  app.get('/readyz', async (c) => {
    const checks = await core.readiness()
    return c.json(checks, checks.ok ? 200 : 503)
  })
  app.get('/metrics', async (c) => c.text(await core.metrics.render(), 200, { 'Content-Type': core.metrics.registry.contentType }))
  // Before the static app's catch-all, which would otherwise answer these paths.
  mountLinkRoutes(app, core.store)
  const serveApp = staticApp(options.staticRoot)
  app.get('/', serveApp, (c) => c.html(landingPage(new URL(c.req.url).host), 200, { 'Content-Security-Policy': LANDING_CSP }))
  app.get('*', serveApp)
  return app
}

/**
 * Serves the built app's files, looked up on each request so a build made while the relay runs
 * is picked up. The shell and the service worker must be revalidated (a stale service worker
 * would pin an old build); hashed assets never change.
 */
function staticApp(root: string | undefined): MiddlewareHandler {
  let serve: MiddlewareHandler | undefined
  return async (c, next) => {
    if (!root || !existsSync(join(root, 'index.html'))) return next()
    serve ??= serveStatic({
      root,
      onFound: (path, ctx) => {
        // Only the build's own assets/ folder, by the path under the app's root: a root that
        // itself lies under a folder named assets made the shell immutable for a year.
        const hashed = relative(root, path).split(sep)[0] === 'assets'
        ctx.header('Cache-Control', hashed ? 'public, max-age=31536000, immutable' : 'no-cache')
      },
    })
    return serve(c, next)
  }
}

const landingPage = (host: string) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Petrel relay</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1b1b1f}code,pre{background:#f3f3f6;border-radius:4px;padding:.1rem .3rem}pre{padding:1rem;overflow:auto}</style>
</head><body>
<h1>Petrel relay is running</h1>
<p>This relay stores end-to-end-encrypted conversations it cannot read. Connect a client to it:</p>
<pre>import { createClient } from 'petrel/client'
const alice = await createClient({ relay: 'ws://${host}', name: 'Alice', storage: './alice.db' })
const conv = await alice.createConversation({ title: 'Trip' })
await conv.send('hello')
console.log(await conv.invite())   // give this to Bob: await bob.join(invite)</pre>
<p>The demo chat app is served here once built: <code>npm run build:app</code> (<code>npm start</code> does it).</p>
<p>Health: <a href="/healthz">/healthz</a></p>
</body></html>`
