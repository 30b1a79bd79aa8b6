/**
 * A compacted conversation opened in the demo app in Debian's Chromium: the history reaches the
 * browser only as a compressed snapshot (seal version 2), which the browser inflates with its
 * own DecompressionStream — the path Node never takes.
 *
 * Needs /usr/bin/chromium (`apt-get install chromium`); skipped without it, except in CI.
 */
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type PetrelClient, createClient } from '../../src/client/index.js'
import { type AppUnderTest, CHROMIUM, hasChromium, startApp } from './app-harness.js'

describe.skipIf(!hasChromium)(hasChromium ? 'a compacted conversation in Chromium' : `a compacted conversation (skipped: no ${CHROMIUM})`, () => {
  let app: AppUnderTest
  let alice: PetrelClient | undefined

  beforeAll(async () => {
    app = await startApp('petrel-browser-history-')
  }, 120_000)

  afterAll(async () => {
    await alice?.close()
    await app?.stop()
  })

  it('a new member in the browser shows history the relay keeps only as a compressed snapshot', { timeout: 90_000 }, async () => {
    alice = await createClient({ relay: app.relay.url, name: 'Alice', storage: join(app.dir, 'alice.db'), compaction: false })
    const conv = await alice.createConversation({ title: 'Archive' })
    const n = 2000
    for (let i = 0; i < n; i += 500) await Promise.all(Array.from({ length: 500 }, (_, j) => conv.send(`archived ${i + j}: the same words again and again`)))
    // All stored by the relay (✓) before its size is taken.
    await waitFor(() => conv.messages().every((m) => m.status !== 'pending'), 15_000)
    const before = await app.relay.store.roomBytes(conv.id)
    await (conv as unknown as { writeSnapshot: () => Promise<void> }).writeSnapshot()
    // Compacted: the rows the snapshot covers are placeholders now, so the relay holds less.
    const deadline = Date.now() + 15_000
    while ((await app.relay.store.roomBytes(conv.id)) >= before) {
      if (Date.now() > deadline) throw new Error('the relay did not compact under the snapshot')
      await new Promise((r) => setTimeout(r, 50))
    }

    const context = await app.browser.newContext({ viewport: { width: 1100, height: 720 } })
    const page = await context.newPage()
    const errors: string[] = []
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(`console: ${msg.text()}`)
    })
    page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`))
    await page.goto(`${app.base}/#invite=${await conv.invite()}`)
    await page.getByLabel('Display name').fill('Bob')
    await page.getByRole('button', { name: 'Continue' }).click()
    await page.locator('.head-title', { hasText: 'Archive' }).waitFor({ timeout: 20_000 })
    // Every message shown here came from the snapshot: the relay no longer has their rows.
    await page.locator('.messages .msg.theirs', { hasText: `archived ${n - 1}:` }).waitFor({ timeout: 20_000 })
    await page.locator('.messages .msg.theirs', { hasText: `archived ${n - 40}:` }).waitFor({ timeout: 5_000 })
    // And Bob's reply reaches Alice, so the browser's device works on top of that history.
    await page.getByRole('textbox', { name: 'Message' }).fill('read it all')
    await page.keyboard.press('Enter')
    await waitFor(() => conv.messages().some((m) => m.text === 'read it all'), 15_000)
    expect(errors).toEqual([])
    await context.close()
  })
})

async function waitFor(fn: () => boolean, ms: number): Promise<void> {
  const until = Date.now() + ms
  while (!fn()) {
    if (Date.now() > until) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 20))
  }
}

