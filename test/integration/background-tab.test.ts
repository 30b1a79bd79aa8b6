/**
 * A background tab: browsers run a hidden page's timers at most about once a second, so
 * anything on the way from Alice's Send to her ✓✓ (or blue ✓✓) that waits on a timer waits a
 * second there. Emulated here: while the fake `document` is hidden, no `setTimeout` callback
 * runs sooner than THROTTLE_MS after it was set — whether set before or after the page hid.
 * The browser (document, timer throttling) and IndexedDB (fake-indexeddb) are the outside
 * world, faked; clients, stores and connections are ours, and the relay runs in a process of its
 * own, so the throttle reaches only the page's side.
 */
import 'fake-indexeddb/auto'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createClient } from '../../src/client/index.js'
import { type FakeDocument, offPage, onPage } from '../fixtures/fake-document.js'
import { startRelayOnAnyPort } from './relay-process.js'

/** Harsher than browsers' one second, so a throttled wait stands well apart from a loaded machine's delay. */
const THROTTLE_MS = 2_000
const realSetTimeout = globalThis.setTimeout

let page: FakeDocument
let relay: ChildProcess | undefined
let dir: string
const closers: Array<() => Promise<void>> = []

beforeEach(() => {
  page = onPage()
  dir = mkdtempSync(join(tmpdir(), 'petrel-background-'))
  // A timer that comes due while the page is hidden waits until THROTTLE_MS after it was set.
  const throttled = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const setAt = performance.now()
    const fire = () => {
      const left = setAt + THROTTLE_MS - performance.now()
      if (page.visibilityState === 'hidden' && left > 0) {
        inner = realSetTimeout(fire, left)
        return
      }
      fn(...args)
    }
    let inner = realSetTimeout(fire, ms)
    // Cancelling or unref'ing reaches whichever real timer is current.
    const timer = {
      ref: () => {
        inner.ref()
        return timer
      },
      unref: () => {
        inner.unref()
        return timer
      },
      hasRef: () => inner.hasRef(),
      cancel: () => clearTimeout(inner),
    }
    return timer
  }) as unknown as typeof setTimeout
  globalThis.setTimeout = throttled
  const realClear = globalThis.clearTimeout
  globalThis.clearTimeout = ((t?: { cancel?: () => void }) => (t?.cancel ? t.cancel() : realClear(t as never))) as typeof clearTimeout
  restoreTimers = () => {
    globalThis.setTimeout = realSetTimeout
    globalThis.clearTimeout = realClear
  }
})

let restoreTimers = () => {}

afterEach(async () => {
  page.set('visible')
  for (const close of closers.splice(0).reverse()) await close().catch(() => {})
  restoreTimers()
  relay?.kill('SIGKILL')
  relay = undefined
  offPage()
  rmSync(dir, { recursive: true, force: true })
})

/** A relay in its own process, and Alice and Bob on IndexedDB in one conversation. */
async function chat() {
  const started = await startRelayOnAnyPort(join(dir, 'relay.db'))
  relay = started.proc
  const { port } = started
  const url = `ws://127.0.0.1:${port}`
  const alice = await createClient({ relay: url, name: 'alice', storageKey: `alice-${port}` })
  closers.push(() => alice.close())
  const bob = await createClient({ relay: url, name: 'bob', storageKey: `bob-${port}` })
  closers.push(() => bob.close())
  const aliceConv = await alice.createConversation({ title: 'background' })
  const bobConv = await bob.join(await aliceConv.invite())
  await aliceConv.whenSynced(10_000)
  await bobConv.whenSynced(10_000)
  return { aliceConv, bobConv }
}

type Conv = Awaited<ReturnType<typeof chat>>['aliceConv']

/** Milliseconds until `check` holds, heard through `subscribe` (polling would itself be throttled). */
function whenHolds(conv: Conv, check: () => boolean, what: string, timeoutMs = 10_000): Promise<number> {
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    const stop = conv.subscribe(() => {
      if (!check()) return
      stop()
      resolve(performance.now() - t0)
    })
    realSetTimeout(() => {
      stop()
      reject(new Error(`timed out waiting for ${what}`))
    }, timeoutMs)
    if (check()) {
      stop()
      resolve(0)
    }
  })
}

describe('background tab', () => {
  it('the throttle emulation holds back a timer that comes due while hidden (so the tests below can fail)', async () => {
    page.set('hidden')
    const t0 = performance.now()
    await new Promise((r) => setTimeout(r, 10))
    expect(performance.now() - t0).toBeGreaterThanOrEqual(THROTTLE_MS - 50)
  })

  it('delivers ✓✓ to a sender whose recipient is hidden without waiting on a throttled timer', async () => {
    const { aliceConv, bobConv } = await chat()
    page.set('hidden')
    const m = await aliceConv.send('while you were away')
    const ms = await whenHolds(aliceConv, () => aliceConv.message(m.id)?.status === 'delivered', '✓✓')
    expect(bobConv.message(m.id)?.text).toBe('while you were away')
    expect(ms).toBeLessThan(THROTTLE_MS - 500)
  })

  it('sends an acknowledgement waiting on its timer the moment the page hides', async () => {
    const { aliceConv, bobConv } = await chat()
    const m = await aliceConv.send('read me')
    await whenHolds(aliceConv, () => aliceConv.message(m.id)?.status === 'delivered', '✓✓')
    // markRead schedules the read acknowledgement on a timer of its own: it is waiting now.
    await bobConv.markRead()
    page.set('hidden')
    const ms = await whenHolds(aliceConv, () => aliceConv.message(m.id)?.status === 'read', 'blue ✓✓')
    expect(ms).toBeLessThan(THROTTLE_MS - 500)
  })
})
