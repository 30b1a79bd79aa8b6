import { afterEach, describe, expect, it, vi } from 'vitest'
import * as Y from 'yjs'
import { LostHistoryFill, type LostHistoryFillHost } from '../../src/client/lost-history-fill.js'
import { generateSigningKeyPair, randomBytes } from '../../src/shared/crypto/index.js'
import { sealEnvelope } from '../../src/shared/envelope.js'

afterEach(() => vi.useRealTimers())

const device = generateSigningKeyPair()
const sealedUnder = (epoch: number) =>
  sealEnvelope({ room: 'r', epoch, key: randomBytes(32), senderDevicePub: device.publicKey, senderDeviceSecret: device.secretKey, update: Uint8Array.of(0, 0) })

/** A device that joined 'from-join' at epoch 3: Alice's change written before it came waits in Yjs for her earlier one. */
function joinedLate(options: { keys?: number[]; epoch?: number; settled?: boolean; held?: Array<{ bytes: Uint8Array }>; awaitingWelcome?: boolean } = {}) {
  const alice = new Y.Doc()
  alice.clientID = 7
  alice.getMap('messages').set('a.1', 'before you came')
  const before = Y.encodeStateVector(alice)
  alice.getMap('messages').set('a.2', 'after')
  const inner = new Y.Doc()
  Y.applyUpdate(inner, Y.encodeStateAsUpdate(alice, before))
  let passes = 0
  let fill: LostHistoryFill
  const host: LostHistoryFillHost = {
    inner,
    closed: false,
    epochKeys: new Map((options.keys ?? [3]).map((e) => [e, randomBytes(32)])),
    epoch: options.epoch ?? Math.max(...(options.keys ?? [3])),
    settled: options.settled ?? true,
    held: options.held ?? [],
    awaitingWelcome: options.awaitingWelcome ?? false,
    afterIncoming: (job) => void job(),
    receivePass: async () => {
      passes++
      for (const u of fill.fillers()) Y.applyUpdate(inner, u)
    },
  }
  fill = new LostHistoryFill(host)
  return { fill, inner, passes: () => passes }
}

describe('lost history fill', () => {
  it('fills what still waits for history this device never reads, after 3 s, and what waited goes in', () => {
    vi.useFakeTimers()
    const { fill, inner, passes } = joinedLate()
    fill.soon()
    vi.advanceTimersByTime(2_999)
    expect(passes()).toBe(0)
    vi.advanceTimersByTime(1)
    expect(passes()).toBe(1)
    expect(inner.store.pendingStructs).toBeNull()
    expect(inner.getMap('messages').toJSON()).toEqual({ 'a.2': 'after' })
  })

  it('never fills on a device holding every key of the history: what waits there is coming', () => {
    vi.useFakeTimers()
    const { fill, inner, passes } = joinedLate({ keys: [0, 1, 2, 3] })
    fill.soon()
    vi.advanceTimersByTime(10_000)
    expect(passes()).toBe(0)
    expect(inner.store.pendingStructs).not.toBeNull()
  })

  it('does not fill before the device has caught up', () => {
    vi.useFakeTimers()
    const { fill, passes } = joinedLate({ settled: false })
    fill.soon()
    vi.advanceTimersByTime(10_000)
    expect(passes()).toBe(0)
  })

  it('does not fill while something held back could still open (sealed under an epoch this device has)', async () => {
    const held = [{ bytes: await sealedUnder(4) }]
    vi.useFakeTimers()
    const { fill, passes } = joinedLate({ held })
    fill.soon()
    vi.advanceTimersByTime(10_000)
    expect(passes()).toBe(0)
  })

  it('fills past held envelopes sealed before this device’s first epoch, which it can never open', async () => {
    const held = [{ bytes: await sealedUnder(1) }]
    vi.useFakeTimers()
    const { fill, inner } = joinedLate({ held })
    fill.soon()
    vi.advanceTimersByTime(3_000)
    expect(inner.store.pendingStructs).toBeNull()
  })

  it('fills on a device let back in after epochs it was out for, past held envelopes of those epochs', async () => {
    // Removed during epoch 2, back 'from-join' at 3: it holds 0, 1 and 3, and never gets 2.
    const held = [{ bytes: await sealedUnder(2) }]
    vi.useFakeTimers()
    const { fill, inner } = joinedLate({ keys: [0, 1, 3], held })
    fill.soon()
    vi.advanceTimersByTime(3_000)
    expect(inner.store.pendingStructs).toBeNull()
  })

  it("does not fill an epoch below the current that an admin's welcome is to bring (a 'full' invite's joiner)", async () => {
    // Joined by an invite of epoch 0 while the admins were away, during epoch 1; epoch 2 was
    // wrapped for it. Epoch 1's key comes with the welcome: filled, what it said was lost.
    const held = [{ bytes: await sealedUnder(1) }]
    vi.useFakeTimers()
    const { fill, inner } = joinedLate({ keys: [0, 2], held, awaitingWelcome: true })
    fill.soon()
    vi.advanceTimersByTime(10_000)
    expect(inner.store.pendingStructs).not.toBeNull()
  })

  it('gives no fillers to a receive pass it did not queue', () => {
    const { fill } = joinedLate()
    expect(fill.fillers()).toEqual([])
  })
})
