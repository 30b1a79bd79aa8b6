/**
 * A background tab: its timers fire about once a second, so what only lingers for company
 * (received rows' commit, the ✓✓ acknowledgement) goes at once there. The browser's `document`
 * is faked here (the outside world); the commit group and the IndexedDB store are ours, real.
 */
import 'fake-indexeddb/auto'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { afterUnlessHidden, pageHidden, whenPageHides } from '../../src/client/page-visibility.js'
import { createCommitGroup } from '../../src/client/storage/commit-group.js'
import type { Batch } from '../../src/client/storage/device-store.js'
import { openIndexedDbStore } from '../../src/client/storage/indexeddb-store.js'
import { offPage, onPage } from '../fixtures/fake-document.js'

afterEach(() => {
  offPage()
  vi.useRealTimers()
})

const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r))
}

describe('page visibility', () => {
  it('is never hidden without a document (Node), and waits out the delay there', async () => {
    expect(pageHidden()).toBe(false)
    let ran = 0
    afterUnlessHidden(30, () => ran++)
    await turns(3)
    expect(ran).toBe(0)
    await new Promise((r) => setTimeout(r, 40))
    expect(ran).toBe(1)
  })

  it('runs at once in a hidden page, and a cancelled run never runs', async () => {
    const page = onPage()
    page.set('hidden')
    let ran = 0
    afterUnlessHidden(60_000, () => ran++)
    afterUnlessHidden(60_000, () => ran++)()
    await Promise.resolve()
    expect(ran).toBe(1)
  })

  it('tells of the page becoming hidden, not visible, until stopped', () => {
    const page = onPage()
    let told = 0
    const stop = whenPageHides(() => told++)
    page.set('hidden')
    page.set('visible')
    page.set('hidden')
    expect(told).toBe(2)
    stop()
    page.set('visible')
    page.set('hidden')
    expect(told).toBe(2)
    expect(page.listening).toBe(0)
  })
})

describe('commit group in a hidden page', () => {
  const batch: Batch = { put: [['k', Uint8Array.of(1)]] }

  it('writes soon commits at once while it may not linger', async () => {
    const written: number[] = []
    const group = createCommitGroup((b) => void written.push(b.length), 60_000, () => false)
    await group.commit(batch, true)
    expect(written).toEqual([1])
  })

  it('ends a linger already under way when hurried after the page hid', async () => {
    let mayLinger = true
    const written: number[] = []
    const group = createCommitGroup((b) => void written.push(b.length), 60_000, () => mayLinger)
    const landed = group.commit(batch, true)
    await turns(5)
    expect(written).toEqual([])
    group.hurry()
    await turns(5)
    // Hurried while it still may linger: it goes on waiting.
    expect(written).toEqual([])
    mayLinger = false
    group.hurry()
    await landed
    expect(written).toEqual([1])
  })

  it('in the IndexedDB store: a lingering commit lands once the page hides, with no timer firing', async () => {
    // Timers never fire here: only the page hiding can end the linger.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] })
    const page = onPage()
    const store = await openIndexedDbStore(`hidden-${Math.random()}`)
    let landed = false
    const commit = store.commit(batch, { soon: true }).then(() => {
      landed = true
    })
    await turns(20)
    expect(landed).toBe(false)
    page.set('hidden')
    await commit
    expect(await store.get('k')).toEqual(Uint8Array.of(1))
    // Hidden from the start: no linger at all.
    const again = store.commit({ put: [['k2', Uint8Array.of(2)]] }, { soon: true })
    await again
    await store.close()
    expect(page.listening).toBe(0)
  })
})
