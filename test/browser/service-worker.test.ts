/**
 * The installed demo app opens with the relay down: with no network at all (chat.test.ts), and
 * behind a reverse proxy that answers 502 while the relay restarts (OPERATING.md's nginx).
 *
 * Needs /usr/bin/chromium (`apt-get install chromium`); skipped without it, except in CI.
 */
import { createServer, type Server } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type AppUnderTest, CHROMIUM, hasChromium, startApp } from './app-harness.js'

describe.skipIf(!hasChromium)(hasChromium ? 'demo app service worker' : `demo app service worker (skipped: no ${CHROMIUM})`, () => {
  let app: AppUnderTest
  let proxy: Server | undefined

  beforeAll(async () => {
    app = await startApp('petrel-sw-')
  }, 120_000)

  afterAll(async () => {
    proxy?.close()
    await app?.stop()
  })

  it('opens the cached app when a proxy answers 502 for a relay that is down', { timeout: 60_000 }, async () => {
    const context = await app.browser.newContext()
    const page = await context.newPage()
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    await page.goto(app.base)
    await page.getByLabel('Display name').fill('Alice')
    await page.getByRole('button', { name: 'Continue' }).click()
    await page.locator('.shell[data-connection="online"]').waitFor({ timeout: 15_000 })
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, undefined, { timeout: 15_000 })
    const port = app.relay.port
    await app.relay.close()
    proxy = createServer((_, res) => res.writeHead(502, { 'Content-Type': 'text/html' }).end('<h1>502 Bad Gateway</h1>'))
    await new Promise<void>((resolve) => proxy!.listen(port, '127.0.0.1', () => resolve()))
    const response = await page.reload()
    expect(response?.status()).toBe(200)
    await page.locator('.shell').waitFor({ timeout: 15_000 })
    expect(await page.locator('body').textContent()).not.toContain('Bad Gateway')
    expect(errors).toEqual([])
    await context.close()
  })
})
