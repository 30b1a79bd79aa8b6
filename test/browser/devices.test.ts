/**
 * Linked devices in the demo app (examples/chat), in Debian's Chromium driven by playwright-core:
 * Alice's laptop and phone are two browser contexts (two profiles, two IndexedDBs); the phone
 * is linked through the UI by pasting the device link the laptop shows, then gets the
 * conversation with its history and talks in it. Bob is added by his identity, no invite.
 *
 * Needs /usr/bin/chromium (`apt-get install chromium`); skipped without it, except in CI.
 */
import { join } from 'node:path'
import type { BrowserContext, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type AppUnderTest, ARTIFACTS, CHROMIUM, hasChromium, startApp } from './app-harness.js'

interface Device {
  label: string
  context: BrowserContext
  page: Page
  errors: string[]
}

describe.skipIf(!hasChromium)(hasChromium ? 'linked devices in the demo app' : `linked devices in the demo app (skipped: no ${CHROMIUM})`, () => {
  let app: AppUnderTest
  let laptop: Device
  let phone: Device
  let bob: Device
  let carol: Device

  beforeAll(async () => {
    app = await startApp('petrel-devices-')
  }, 120_000)

  afterAll(async () => {
    await app?.stop()
  })

  /** A new browser profile at the first-run screen. */
  async function device(label: string): Promise<Device> {
    const context = await app.browser.newContext({ viewport: { width: 1100, height: 720 } })
    const page = await context.newPage()
    const errors: string[] = []
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(`${label} console: ${msg.text()}`)
    })
    page.on('pageerror', (err) => errors.push(`${label} pageerror: ${err.message}`))
    await page.goto(app.base)
    await page.getByLabel('Display name').waitFor()
    return { label, context, page, errors }
  }

  async function newPerson(label: string, name: string): Promise<Device> {
    const d = await device(label)
    await d.page.getByLabel('Display name').fill(name)
    await d.page.getByRole('button', { name: 'Continue' }).click()
    await online(d)
    return d
  }

  const online = (d: Device) => d.page.locator('.shell[data-connection="online"]').waitFor({ timeout: 15_000 })
  const shot = (d: Device, file: string) => d.page.screenshot({ path: join(ARTIFACTS, file) })
  const send = async (d: Device, text: string) => {
    await d.page.getByRole('textbox', { name: 'Message' }).fill(text)
    await d.page.keyboard.press('Enter')
  }
  const message = (d: Device, text: string) => d.page.locator('.messages .msg', { hasText: text })
  const conversation = (d: Device, title: string) => d.page.locator('.conv-item', { hasText: title })
  const devicesDialog = (d: Device) => d.page.getByRole('dialog', { name: 'Devices' })

  it('the laptop starts a conversation and offers a device link', { timeout: 60_000 }, async () => {
    laptop = await newPerson('laptop', 'Alice')
    await laptop.page.getByRole('button', { name: 'New conversation' }).first().click()
    await laptop.page.getByLabel('Title').fill('Trip')
    await laptop.page.getByRole('button', { name: 'Create' }).click()
    await laptop.page.locator('.head-title', { hasText: 'Trip' }).waitFor()
    await send(laptop, 'Written on the laptop')
    await laptop.page.locator('.messages .msg.mine:has(.text:text-is("Written on the laptop")) .tick:not([aria-label="pending"])').waitFor({ timeout: 15_000 })

    await laptop.page.getByRole('button', { name: 'Devices' }).click()
    const dialog = devicesDialog(laptop)
    await dialog.locator('li', { hasText: 'This device' }).waitFor()
    expect(await dialog.locator('li').count()).toBe(1)
    await dialog.getByRole('button', { name: 'Link a new device' }).click()
    await dialog.getByText('Waiting for the new device…').waitFor()
    await laptop.page.waitForFunction(() => (document.querySelector('.link-box .invite-link') as HTMLInputElement | null)?.value.startsWith('petrel-link:'))
    await shot(laptop, 'devices-01-laptop-link.png')
  })

  it('the phone is linked through the first-run screen: a bad link says why, the real one links', { timeout: 60_000 }, async () => {
    phone = await device('phone')
    await phone.page.getByRole('button', { name: 'Link to an existing device' }).click()
    await phone.page.getByRole('heading', { name: 'Link this device' }).waitFor()
    // No name asked: the link carries the person's (asked, it renamed them everywhere).
    expect(await phone.page.getByLabel('Display name').isHidden()).toBe(true)
    await phone.page.getByLabel('Device link').fill('petrel-link:not-a-link')
    await phone.page.getByRole('button', { name: 'Link this device' }).click()
    await phone.page.getByRole('alert').getByText('not a device link').waitFor()
    await shot(phone, 'devices-02-phone-bad-link.png')

    // The phone shows its progress until the laptop answered.
    await phone.page.evaluate(() => {
      const w = window as unknown as { sawWaiting: boolean }
      w.sawWaiting = false
      new MutationObserver(() => {
        if (document.body.textContent?.includes('Waiting for your other device…')) w.sawWaiting = true
      }).observe(document.body, { childList: true, subtree: true, characterData: true })
    })
    const payload = await devicesDialog(laptop).getByLabel('Device link').inputValue()
    await phone.page.getByLabel('Device link').fill(payload)
    await phone.page.getByRole('button', { name: 'Link this device' }).click()
    await online(phone)
    expect(await phone.page.evaluate(() => (window as unknown as { sawWaiting: boolean }).sawWaiting)).toBe(true)
    expect(await phone.page.locator('.me strong').textContent()).toBe('Alice')

    // The laptop hears of it while its dialog is open, and lists the phone.
    const dialog = devicesDialog(laptop)
    await dialog.getByText('New device linked').waitFor()
    await dialog.locator('li', { hasText: 'Other device' }).waitFor()
    expect(await dialog.locator('.link-box').isHidden()).toBe(true)
    await shot(laptop, 'devices-03-laptop-linked.png')
    await dialog.getByRole('button', { name: 'Done' }).click()
  })

  it('the phone gets the conversation with its history, without a reload, and talks in it', { timeout: 60_000 }, async () => {
    await conversation(phone, 'Trip').waitFor({ timeout: 20_000 })
    await conversation(phone, 'Trip').click()
    await phone.page.locator('.head-title', { hasText: 'Trip' }).waitFor()
    // Same person: the laptop's message is "mine" on the phone too.
    await phone.page.locator('.messages .msg.mine', { hasText: 'Written on the laptop' }).waitFor({ timeout: 20_000 })
    await send(phone, 'Written on the phone')
    await message(laptop, 'Written on the phone').waitFor({ timeout: 20_000 })
    await shot(phone, 'devices-04-phone-chat.png')
    await shot(laptop, 'devices-04-laptop-chat.png')

    // The phone lists both devices, and leaves linking to the first one.
    await phone.page.getByRole('button', { name: 'Devices' }).click()
    const dialog = devicesDialog(phone)
    await dialog.locator('li', { hasText: 'This device' }).waitFor()
    await dialog.locator('li').nth(1).waitFor()
    expect(await dialog.locator('li').count()).toBe(2)
    expect(await dialog.getByRole('button', { name: 'Link a new device' }).isDisabled()).toBe(true)
    await dialog.getByText('New devices are linked from your first device').waitFor()
    await shot(phone, 'devices-05-phone-devices.png')
    await dialog.getByRole('button', { name: 'Done' }).click()
  })

  it('Bob hands over his identity; Alice adds him, and the conversation appears for him without a reload', { timeout: 60_000 }, async () => {
    bob = await newPerson('bob', 'Bob')
    await bob.page.getByRole('button', { name: 'My identity' }).click()
    const mine = bob.page.getByRole('dialog', { name: 'My identity' }).getByLabel('My identity')
    await bob.page.waitForFunction(() => (document.querySelector('textarea[aria-label="My identity"]') as HTMLTextAreaElement | null)?.value.startsWith('petrel-id:'))
    const identity = await mine.inputValue()
    await bob.page.getByRole('dialog', { name: 'My identity' }).getByRole('button', { name: 'Done' }).click()

    await laptop.page.getByRole('button', { name: 'Add person' }).click()
    const add = laptop.page.getByRole('dialog', { name: 'Add person' })
    await add.getByLabel('Their identity').fill('petrel-id:garbage')
    await add.getByRole('button', { name: 'Add', exact: true }).click()
    await add.getByRole('alert').getByText('not a Petrel identity').waitFor()
    await add.getByLabel('Their identity').fill(identity)
    await add.getByRole('button', { name: 'Add', exact: true }).click()
    await add.waitFor({ state: 'hidden' })

    await conversation(bob, 'Trip').waitFor({ timeout: 20_000 })
    await conversation(bob, 'Trip').click()
    await bob.page.locator('.messages .msg.theirs', { hasText: 'Written on the phone' }).waitFor({ timeout: 20_000 })
    await send(bob, 'Hi Alice, Bob here')
    await message(laptop, 'Hi Alice, Bob here').waitFor({ timeout: 20_000 })
    await message(phone, 'Hi Alice, Bob here').waitFor({ timeout: 20_000 })
    // Bob was added as a member, not an admin: no "Add person" for him.
    expect(await bob.page.getByRole('button', { name: 'Add person' }).isHidden()).toBe(true)
    await shot(bob, 'devices-06-bob-added.png')
  })

  it('Carol, added without earlier messages, still sees the title and who wrote what', { timeout: 60_000 }, async () => {
    carol = await newPerson('carol', 'Carol')
    await carol.page.getByRole('button', { name: 'My identity' }).click()
    await carol.page.waitForFunction(() => (document.querySelector('textarea[aria-label="My identity"]') as HTMLTextAreaElement | null)?.value.startsWith('petrel-id:'))
    const identity = await carol.page.getByRole('dialog', { name: 'My identity' }).getByLabel('My identity').inputValue()
    await carol.page.getByRole('dialog', { name: 'My identity' }).getByRole('button', { name: 'Done' }).click()
    await laptop.page.getByRole('button', { name: 'Add person' }).click()
    const add = laptop.page.getByRole('dialog', { name: 'Add person' })
    await add.getByLabel('Their identity').fill(identity)
    await add.getByLabel('They can read earlier messages').uncheck()
    await add.getByRole('button', { name: 'Add', exact: true }).click()
    await add.waitFor({ state: 'hidden' })
    // The title was written before Carol's key: it reaches her said again under hers.
    await conversation(carol, 'Trip').waitFor({ timeout: 20_000 })
    await conversation(carol, 'Trip').click()
    await send(laptop, 'Welcome Carol')
    await send(bob, 'Hi Carol')
    await message(carol, 'Welcome Carol').locator('.author', { hasText: 'Alice' }).waitFor({ timeout: 20_000 })
    await message(carol, 'Hi Carol').locator('.author', { hasText: 'Bob' }).waitFor({ timeout: 20_000 })
    expect(await message(carol, 'Written on the laptop').count()).toBe(0)
    await shot(carol, 'devices-07-carol-from-join.png')
  })

  it('the laptop removes the phone', { timeout: 60_000 }, async () => {
    await laptop.page.getByRole('button', { name: 'Devices' }).click()
    const dialog = devicesDialog(laptop)
    await dialog.locator('li', { hasText: 'Other device' }).getByRole('button', { name: /^Remove/ }).click()
    await dialog.getByRole('button', { name: 'Remove for good' }).click()
    await dialog.getByText('Device removed.').waitFor({ timeout: 15_000 })
    await dialog.locator('li', { hasText: 'Other device' }).waitFor({ state: 'detached' })
    expect(await dialog.locator('li').count()).toBe(1)
    await shot(laptop, 'devices-08-laptop-removed.png')
    await dialog.getByRole('button', { name: 'Done' }).click()
    // The phone says so where it is read, in the conversation, and takes no more messages.
    await conversation(phone, 'Trip').click().catch(() => undefined)
    await phone.page.locator('.head-title', { hasText: 'Trip' }).waitFor()
    await phone.page.locator('.refusal-note', { hasText: 'You were removed from this conversation, or this device was.' }).waitFor({ timeout: 15_000 })
    expect(await phone.page.getByRole('textbox', { name: 'Message' }).isDisabled()).toBe(true)
    expect(await phone.page.getByRole('button', { name: 'Send' }).isDisabled()).toBe(true)
    await shot(phone, 'devices-08-phone-removed.png')
  })

  it('from Conversation info, the admin removes Carol and Bob leaves: each is told so in place', { timeout: 60_000 }, async () => {
    await conversation(laptop, 'Trip').click()
    await laptop.page.locator('.head-title button').click()
    const info = laptop.page.getByRole('dialog', { name: 'Conversation info' })
    const members = info.getByRole('list', { name: 'Members' })
    await members.locator('li', { hasText: 'Carol' }).waitFor()
    await members.getByRole('button', { name: 'Remove Carol' }).click()
    await members.getByRole('button', { name: 'Remove for good' }).click()
    await members.locator('li', { hasText: 'Carol' }).waitFor({ state: 'detached', timeout: 15_000 })
    await carol.page.locator('.refusal-note', { hasText: 'You were removed from this conversation' }).waitFor({ timeout: 15_000 })
    expect(await carol.page.getByRole('button', { name: 'Send' }).isDisabled()).toBe(true)
    await carol.page.locator('.head-title button').click()
    const carolInfo = carol.page.getByRole('dialog', { name: 'Conversation info' })
    expect(await carolInfo.getByRole('button', { name: 'Leave conversation' }).isHidden()).toBe(true)

    await info.getByRole('button', { name: 'Done' }).click()
    // The laptop's kept invite link, made while Bob is a member.
    const inviteLink = async (): Promise<string> => {
      await laptop.page.getByRole('button', { name: 'Invite', exact: true }).click()
      await laptop.page.waitForFunction(() => (document.querySelector('.invite-link') as HTMLInputElement | null)?.value.includes('#invite='))
      const link = await laptop.page.getByLabel('Invite link').inputValue()
      await laptop.page.getByRole('button', { name: 'Done' }).click()
      return link
    }
    const before = await inviteLink()
    await laptop.page.locator('.head-title button').click()

    await conversation(bob, 'Trip').click()
    await bob.page.locator('.head-title button').click()
    const bobInfo = bob.page.getByRole('dialog', { name: 'Conversation info' })
    await bobInfo.getByRole('button', { name: 'Leave conversation' }).click()
    await bobInfo.getByRole('button', { name: 'Leave for good?' }).click()
    await bob.page.locator('.refusal-note', { hasText: 'You left this conversation.' }).waitFor({ timeout: 15_000 })
    await members.locator('li', { hasText: 'Bob' }).waitFor({ state: 'detached', timeout: 15_000 })
    expect(await members.locator('li').count()).toBe(1)
    await shot(laptop, 'devices-09-laptop-members.png')
    await shot(bob, 'devices-09-bob-left.png')
    await info.getByRole('button', { name: 'Done' }).click()
    // A link made before Bob left can never let him back (the relay's rule): the laptop offers
    // a fresh one now, and it does. Before, the app offered the old one again.
    const after = await inviteLink()
    expect(after).not.toBe(before)
    await bob.page.goto(after)
    await bob.page.getByRole('dialog').getByRole('button', { name: 'Join' }).click()
    await bob.page.locator('.toast', { hasText: 'Joined' }).waitFor({ timeout: 20_000 })
    await bob.page.locator('.refusal-note').waitFor({ state: 'hidden', timeout: 15_000 })
  })

  it('logs no console errors', () => {
    expect([...(laptop?.errors ?? []), ...(phone?.errors ?? []), ...(bob?.errors ?? []), ...(carol?.errors ?? [])]).toEqual([])
  })
})
