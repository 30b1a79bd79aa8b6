/**
 * The demo app (examples/chat) in Debian's Chromium, driven by playwright-core: two people in
 * two browser contexts, a real relay serving the built app, offline sends that survive a reload
 * through the service worker, and the ticks moving clock → ✓ → grey ✓✓ → blue ✓✓.
 *
 * Needs /usr/bin/chromium (`apt-get install chromium`); skipped without it, except in CI.
 */
import { join } from 'node:path'
import type { BrowserContext, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type AppUnderTest, ARTIFACTS, CHROMIUM, hasChromium, startApp } from './app-harness.js'

interface Person {
  name: string
  context: BrowserContext
  page: Page
  errors: string[]
}

describe.skipIf(!hasChromium)(hasChromium ? 'demo chat app in Chromium' : `demo chat app (skipped: no ${CHROMIUM})`, () => {
  let app: AppUnderTest
  let alice: Person
  let bob: Person
  let tripLink = ""

  beforeAll(async () => {
    app = await startApp('petrel-browser-')
  }, 120_000)

  afterAll(async () => {
    await app?.stop()
  })

  async function person(name: string, url = app.base): Promise<Person> {
    const context = await app.browser.newContext({ viewport: { width: 1100, height: 720 } })
    const page = await context.newPage()
    const errors: string[] = []
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(`${name} console: ${msg.text()}`)
    })
    page.on('pageerror', (err) => errors.push(`${name} pageerror: ${err.message}`))
    await page.goto(url)
    await page.getByLabel('Display name').fill(name)
    await page.getByRole('button', { name: 'Continue' }).click()
    await page.locator('.shell[data-connection="online"]').waitFor()
    return { name, context, page, errors }
  }

  const shot = (p: Person, file: string) => p.page.screenshot({ path: join(ARTIFACTS, file) })

  /** The tick of my message with this text, once it shows `status`. */
  const tick = (p: Person, text: string, status: string) =>
    p.page.locator(`.messages .msg.mine:has(.text:text-is("${text}")) .tick[aria-label="${status}"]`).waitFor({ timeout: 15_000 })

  /**
   * My message with this text shows `status` or a later one. Bob reads at once while the
   * conversation is on his screen, so ✓ may last less than a frame, or be skipped by a render
   * that coalesces it with the read receipt.
   */
  const tickAtLeast = (p: Person, text: string, status: 'sent' | 'delivered') => {
    const later = ['sent', 'delivered', 'read'].slice(status === 'sent' ? 0 : 1)
    const any = later.map((s) => `[aria-label="${s}"]`).join(',')
    return p.page.locator(`.messages .msg.mine:has(.text:text-is("${text}")) .tick:is(${any})`).waitFor({ timeout: 15_000 })
  }

  const send = async (p: Person, text: string) => {
    await p.page.getByRole('textbox', { name: 'Message' }).fill(text)
    await p.page.keyboard.press('Enter')
  }

  const openConversation = (p: Person, title: string) => p.page.locator('.conv-item', { hasText: title }).click()

  /** Record every status each of my messages shows, in order (rows are replaced when it moves). */
  const recordTicks = (p: Person) =>
    p.page.evaluate(() => {
      const w = window as unknown as { ticks: Record<string, string[]> }
      w.ticks = {}
      const note = (row: Element) => {
        const text = row.querySelector('.text')?.textContent ?? ''
        const status = row.querySelector('.tick')?.getAttribute('aria-label') ?? ''
        const seen = w.ticks[text] ?? []
        if (seen[seen.length - 1] !== status) seen.push(status)
        w.ticks[text] = seen
      }
      document.querySelectorAll('.messages .msg.mine').forEach(note)
      new MutationObserver((records) => {
        for (const r of records) for (const n of r.addedNodes) if (n instanceof Element && n.matches('.msg.mine')) note(n)
      }).observe(document.querySelector('.messages')!, { childList: true })
    })

  const ticksSeen = (p: Person) => p.page.evaluate(() => (window as unknown as { ticks: Record<string, string[]> }).ticks)

  it('Alice creates a conversation, Bob joins from the invite link, they talk', { timeout: 90_000 }, async () => {
    alice = await person('Alice')
    await alice.page.getByRole('button', { name: 'New conversation' }).first().click()
    await alice.page.getByLabel('Title').fill('Trip')
    await alice.page.getByRole('button', { name: 'Create' }).click()
    await alice.page.locator('.head-title', { hasText: 'Trip' }).waitFor()
    await alice.page.getByRole('button', { name: 'Invite', exact: true }).click()
    const linkBox = alice.page.getByLabel('Invite link')
    await alice.page.waitForFunction(() => (document.querySelector('.invite-link') as HTMLInputElement | null)?.value.includes('#invite='))
    const link = await linkBox.inputValue()
    tripLink = link
    expect(link.startsWith(`${app.base}/#invite=petrel1.`)).toBe(true)
    await shot(alice, '01-alice-invite.png')
    await alice.page.getByRole('button', { name: 'Done' }).click()

    bob = await person('Bob', link)
    await bob.page.locator('.head-title', { hasText: 'Trip' }).waitFor({ timeout: 20_000 })
    expect(new URL(bob.page.url()).hash).toBe('')

    await send(alice, 'Hi Bob! Ready for the trip?')
    await bob.page.locator('.messages .msg.theirs', { hasText: 'Ready for the trip?' }).waitFor()
    await send(bob, 'Yes! Bags are packed.')
    await alice.page.locator('.messages .msg.theirs', { hasText: 'Bags are packed' }).waitFor()
    await tick(alice, 'Hi Bob! Ready for the trip?', 'read')
    await tick(bob, 'Yes! Bags are packed.', 'read')
    await shot(alice, '02-alice-chat.png')
    await shot(bob, '02-bob-chat.png')
  })

  it('offers the link shared before until it is stopped, stops that one, and offers none to a member who is not an admin', { timeout: 60_000 }, async () => {
    await alice.page.locator('.head-title', { hasText: 'Trip' }).waitFor()
    await alice.page.getByRole('button', { name: 'Invite', exact: true }).click()
    await alice.page.waitForFunction(() => (document.querySelector('.invite-link') as HTMLInputElement | null)?.value.includes('#invite='))
    // The same link: made anew each time, "Stop this link" stopped only the newest.
    expect(await alice.page.getByLabel('Invite link').inputValue()).toBe(tripLink)
    await alice.page.getByRole('button', { name: 'Stop this link' }).click()
    await alice.page.getByText('This link no longer lets anyone join.').waitFor()
    await alice.page.getByRole('button', { name: 'Done' }).click()
    // A newcomer given the stopped link is told so in words, where it stays.
    const late = await app.browser.newContext({ viewport: { width: 1100, height: 720 } })
    const latePage = await late.newPage()
    await latePage.goto(tripLink)
    await latePage.getByLabel('Display name').fill('Late')
    await latePage.getByRole('button', { name: /Continue|Join/ }).click()
    await latePage.locator('.list-empty', { hasText: 'This invite link was stopped, has expired or was used up. Ask for a new one.' }).waitFor({ timeout: 20_000 })
    expect(await latePage.locator('.list-empty').textContent()).not.toMatch(/relay|refused/)
    await late.close()
    // Next time, a new one.
    await alice.page.getByRole('button', { name: 'Invite', exact: true }).click()
    await alice.page.waitForFunction((old) => {
      const v = (document.querySelector('.invite-link') as HTMLInputElement | null)?.value ?? ''
      return v.includes('#invite=') && v !== old
    }, tripLink)
    await alice.page.getByRole('button', { name: 'Done' }).click()
    await bob.page.locator('.head-title', { hasText: 'Trip' }).waitFor()
    expect(await bob.page.getByRole('button', { name: 'Invite', exact: true }).isHidden()).toBe(true)
  })

  it('offline: three sends show clocks and survive a reload through the service worker', { timeout: 60_000 }, async () => {
    // The service worker controls the page once it has cached the shell.
    await alice.page.waitForFunction(() => navigator.serviceWorker.controller !== null, undefined, { timeout: 15_000 })
    // Bob looks at another conversation, so Alice's next messages stay unread for a while.
    await bob.page.getByRole('button', { name: 'New conversation' }).first().click()
    await bob.page.getByLabel('Title').fill('Notes')
    await bob.page.getByRole('button', { name: 'Create' }).click()
    await bob.page.locator('.head-title', { hasText: 'Notes' }).waitFor()

    await alice.context.setOffline(true)
    await alice.page.locator('.banner[data-state="offline"]').waitFor()
    const offline = ['Train leaves at 8:15', 'I booked two window seats', 'Bring snacks?']
    for (const text of offline) {
      await send(alice, text)
      await tick(alice, text, 'pending')
    }
    await shot(alice, '03-alice-offline-pending.png')

    const response = await alice.page.reload()
    expect(response?.fromServiceWorker()).toBe(true)
    await alice.page.locator('.head-title', { hasText: 'Trip' }).waitFor()
    for (const text of offline) await tick(alice, text, 'pending')
    await alice.page.locator('.banner[data-state="offline"]').waitFor()
    await shot(alice, '04-alice-offline-reloaded.png')
  })

  it('back online: ✓, then grey ✓✓ on Bob’s device, then blue ✓✓ once Bob has them in view', { timeout: 60_000 }, async () => {
    const offline = ['Train leaves at 8:15', 'I booked two window seats', 'Bring snacks?']
    await recordTicks(alice)
    await alice.context.setOffline(false)
    await alice.page.locator('.shell[data-connection="online"]').waitFor({ timeout: 15_000 })
    for (const text of offline) await tick(alice, text, 'delivered')
    await bob.page.locator('.conv-item', { hasText: 'Trip' }).locator('.badge', { hasText: '3' }).waitFor()
    await shot(alice, '05-alice-delivered.png')
    await shot(bob, '05-bob-unread.png')

    await openConversation(bob, 'Trip')
    for (const text of offline) await tick(alice, text, 'read')
    const seen = await ticksSeen(alice)
    for (const text of offline) expect(seen[text]).toEqual(['pending', 'sent', 'delivered', 'read'])
    await shot(alice, '06-alice-read.png')
  })

  it('airplane mode does the same without the browser going offline', { timeout: 60_000 }, async () => {
    await openConversation(bob, 'Notes')
    const airplane = alice.page.getByRole('button', { name: 'Airplane mode' })
    await airplane.click()
    expect(await airplane.getAttribute('aria-pressed')).toBe('true')
    await alice.page.locator('.banner[data-state="offline"]').waitFor()
    const texts = ['Boarding the flight now', 'Back online in two hours', 'See you at the station']
    for (const text of texts) {
      await send(alice, text)
      await tick(alice, text, 'pending')
    }
    await shot(alice, '07-alice-airplane-pending.png')
    // Airplane mode outlives a reload; the page itself comes from the network this time.
    await alice.page.reload()
    for (const text of texts) await tick(alice, text, 'pending')
    await alice.page.locator('.banner[data-state="offline"]').waitFor()

    await recordTicks(alice)
    await alice.page.getByRole('button', { name: 'Airplane mode' }).click()
    await alice.page.locator('.shell[data-connection="online"]').waitFor({ timeout: 15_000 })
    for (const text of texts) await tick(alice, text, 'delivered')
    await openConversation(bob, 'Trip')
    for (const text of texts) await tick(alice, text, 'read')
    const seen = await ticksSeen(alice)
    for (const text of texts) expect(seen[text]).toEqual(['pending', 'sent', 'delivered', 'read'])
    await shot(alice, '08-alice-airplane-read.png')
    await shot(bob, '08-bob.png')
  })

  it('message info, typing and the phone layout', { timeout: 60_000 }, async () => {
    await bob.page.getByRole('textbox', { name: 'Message' }).pressSequentially('Perfect, see you there!', { delay: 20 })
    await alice.page.locator('.head-sub', { hasText: 'Bob is typing…' }).waitFor()
    await shot(alice, '09-alice-typing.png')
    await bob.page.keyboard.press('Enter')

    const row = alice.page.locator('.messages .msg.mine', { hasText: 'See you at the station' })
    await row.hover()
    await row.getByRole('button', { name: 'Message info' }).click()
    const info = alice.page.getByRole('dialog', { name: 'Message info' })
    await info.locator('.receipts li', { hasText: 'Bob' }).waitFor()
    expect(await info.locator('.receipts li').textContent()).toMatch(/Read: Today, .*Delivered: Today, /)
    await shot(alice, '10-alice-message-info.png')
    await info.getByRole('button', { name: 'Close' }).click()

    await alice.page.setViewportSize({ width: 390, height: 780 })
    await alice.page.locator('.messages .msg.theirs', { hasText: 'Perfect, see you there!' }).waitFor()
    await shot(alice, '11-phone-conversation.png')
    await alice.page.getByRole('button', { name: 'Back to conversations' }).click()
    await alice.page.locator('.conv-item', { hasText: 'Trip' }).waitFor()
    await shot(alice, '12-phone-list.png')
  })

  it('two tabs of one profile: the second says so, “Use here” moves the engine over, nothing is lost or doubled', { timeout: 60_000 }, async () => {
    const shown = (page: Page) => page.locator('.messages .msg .text').allTextContents()
    await openConversation(alice, 'Trip')
    await send(alice, 'From the first tab')
    await tickAtLeast(alice, 'From the first tab', 'sent')
    const second = await alice.context.newPage()
    second.on('console', (msg) => {
      if (msg.type() === 'error') alice.errors.push(`Alice (tab 2) console: ${msg.text()}`)
    })
    second.on('pageerror', (err) => alice.errors.push(`Alice (tab 2) pageerror: ${err.message}`))
    await second.goto(app.base)
    await second.getByRole('heading', { name: 'Petrel is open in another tab' }).waitFor()
    await shot({ ...alice, page: second }, '13-second-tab.png')
    // The first tab is untouched and keeps sending.
    await send(alice, 'Still the first tab')
    await tickAtLeast(alice, 'Still the first tab', 'sent')
    const before = await shown(alice.page)
    // A half-typed message goes over with the engine.
    await alice.page.getByRole('textbox', { name: 'Message' }).fill('half a thought')

    await second.getByRole('button', { name: 'Use here' }).click()
    await alice.page.getByRole('heading', { name: 'Petrel is open in another tab' }).waitFor()
    await second.locator('.shell[data-connection="online"]').waitFor({ timeout: 15_000 })
    await second.locator('.conv-item', { hasText: 'Trip' }).click()
    await second.locator('.messages .msg.mine', { hasText: 'Still the first tab' }).waitFor()
    expect(await shown(second)).toEqual(before)
    expect(await second.getByRole('textbox', { name: 'Message' }).inputValue()).toBe('half a thought')
    const tab2 = { ...alice, page: second }
    await send(tab2, 'From the second tab')
    await bob.page.locator('.messages .msg.theirs', { hasText: 'From the second tab' }).waitFor()
    // Bob has the conversation in view: straight to read.
    await tick(tab2, 'From the second tab', 'read')
    const bobSees = await shown(bob.page)
    for (const text of ['From the first tab', 'Still the first tab', 'From the second tab']) expect(bobSees.filter((t) => t === text)).toHaveLength(1)
    await shot(alice, '14-first-tab-displaced.png')
    await second.close()
  })

  it('keeps a draft in the conversation it was typed in', { timeout: 60_000 }, async () => {
    await openConversation(bob, 'Trip')
    const composer = bob.page.getByRole('textbox', { name: 'Message' })
    await composer.fill('a draft meant for the trip only')
    await openConversation(bob, 'Notes')
    await bob.page.locator('.head-title', { hasText: 'Notes' }).waitFor()
    expect(await composer.inputValue()).toBe('')
    await openConversation(bob, 'Trip')
    await bob.page.locator('.head-title', { hasText: 'Trip' }).waitFor()
    expect(await composer.inputValue()).toBe('a draft meant for the trip only')
    await composer.fill('')
  })

  it('says the relay cannot be reached when connecting takes long, and goes online once it can be', { timeout: 60_000 }, async () => {
    // Every WebSocket of Bob's is closed at once, as by a relay that is down, until `blocked` ends.
    let blocked = true
    await bob.context.routeWebSocket(/.*/, (ws) => {
      if (blocked) ws.close()
      else ws.connectToServer()
    })
    // The route takes effect in pages loaded after it (Playwright replaces their WebSocket).
    await bob.page.reload()
    const banner = bob.page.locator('.banner')
    await bob.page.locator('.banner[data-state="connecting"][data-unreachable="false"]').waitFor()
    expect(await banner.textContent()).toBe('Connecting…')
    await bob.page.locator('.banner[data-unreachable="true"]').waitFor({ timeout: 15_000 })
    expect(await banner.textContent()).toMatch(/^Cannot reach the relay/)
    await shot(bob, '16-bob-unreachable.png')
    blocked = false
    await bob.page.locator('.shell[data-connection="online"]').waitFor({ timeout: 15_000 })
    expect(await banner.getAttribute('data-unreachable')).toBe('false')
    await bob.context.unrouteAll()
  })

  it('asks someone already set up before joining from a link any page can send them to', { timeout: 60_000 }, async () => {
    const carol = await person('Carol')
    const lure = carol.page
    await lure.getByRole('button', { name: 'New conversation' }).first().click()
    await lure.getByLabel('Title').fill('Lure')
    await lure.getByRole('button', { name: 'Create' }).click()
    await lure.locator('.head-title', { hasText: 'Lure' }).waitFor()
    await lure.getByRole('button', { name: 'Invite', exact: true }).click()
    await lure.waitForFunction(() => (document.querySelector('.invite-link') as HTMLInputElement | null)?.value.includes('#invite='))
    const link = await lure.getByLabel('Invite link').inputValue()
    await lure.getByRole('button', { name: 'Done' }).click()

    // Another site sends Bob's browser to the link: nothing happens without his click.
    await bob.page.goto(link)
    const ask = bob.page.getByRole('dialog', { name: 'Join conversation' })
    await ask.waitFor()
    expect(await ask.textContent()).toContain('“Bob”')
    expect(new URL(bob.page.url()).hash).toBe('')
    await shot(bob, '15-bob-asked-to-join.png')
    await ask.getByRole('button', { name: 'Not now' }).click()
    await bob.page.locator('.shell[data-connection="online"]').waitFor()
    await new Promise((r) => setTimeout(r, 1000))
    expect(await bob.page.locator('.conv-item', { hasText: 'Lure' }).count()).toBe(0)
    // Asked again, he joins.
    await bob.page.goto(link)
    await ask.getByRole('button', { name: 'Join' }).click()
    await bob.page.locator('.head-title', { hasText: 'Lure' }).waitFor({ timeout: 20_000 })

    // Eve opens the link while the relay cannot be reached: "Joining…", then the title once it can.
    const eve = await app.browser.newContext({ viewport: { width: 1100, height: 720 } })
    let blocked = true
    await eve.routeWebSocket(/.*/, (ws) => {
      if (blocked) ws.close()
      else ws.connectToServer()
    })
    const evePage = await eve.newPage()
    await evePage.goto(link)
    await evePage.getByLabel('Display name').fill('Eve')
    await evePage.getByRole('button', { name: /Continue|Join/ }).click()
    await evePage.locator('.head-title', { hasText: 'Joining…' }).waitFor({ timeout: 30_000 })
    blocked = false
    await evePage.locator('.head-title', { hasText: 'Lure' }).waitFor({ timeout: 30_000 })
    await eve.close()
    expect(carol.errors).toEqual([])
    await carol.context.close()
  })

  it('a member who is not an admin renames a conversation, for everyone', { timeout: 60_000 }, async () => {
    await openConversation(bob, 'Trip')
    // The header's title opens the conversation's info: members, rename, leave.
    await bob.page.locator('.head-title button').click()
    const info = bob.page.getByRole('dialog', { name: 'Conversation info' })
    await info.getByRole('list', { name: 'Members' }).locator('li', { hasText: 'Alice' }).getByText('admin').waitFor()
    expect(await info.getByRole('button', { name: /^Remove/ }).count()).toBe(0)
    await info.getByRole('button', { name: 'Rename conversation' }).click()
    const dialog = bob.page.getByRole('dialog', { name: 'Rename conversation' })
    expect(await dialog.getByLabel('Rename to').inputValue()).toBe('Trip')
    await dialog.getByLabel('Rename to').fill('Trip to Lisbon')
    await dialog.getByRole('button', { name: 'Save' }).click()
    await bob.page.locator('.head-title', { hasText: 'Trip to Lisbon' }).waitFor()
    await bob.page.locator('.toast', { hasText: '“\u2068Trip\u2069” is now called “\u2068Trip to Lisbon\u2069”' }).waitFor()
    // Alice's first tab gave the device to a second one, since closed: back in it, she sees it.
    await alice.page.reload()
    await alice.page.locator('.conv-item', { hasText: 'Trip to Lisbon' }).waitFor({ state: 'attached', timeout: 15_000 })
    await shot(alice, '17-alice-renamed.png')
  })

  it('logs no console errors', () => {
    expect([...(alice?.errors ?? []), ...(bob?.errors ?? [])]).toEqual([])
  })
})
