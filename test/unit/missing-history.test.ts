import { describe, expect, it } from 'vitest'
import type { ClientContext } from '../../src/client/client-context.js'
import { MissingHistory, type MissingHistoryHost } from '../../src/client/missing-history.js'
import { WantParts, writeWantParts } from '../../src/shared/room-messages.js'
import { RelayFeature } from '../../src/shared/wire.js'

/** A socket the relay would read: what was sent on it. */
class Socket {
  readyState = 1
  sent: Uint8Array[] = []
  send(data: Uint8Array): void {
    this.sent.push(data)
  }
}

function setup(features: number[] = [RelayFeature.SnapshotParts, RelayFeature.CatchUpParts]) {
  const stored: number[] = []
  const roomSends: Uint8Array[] = []
  const host = {
    id: 'room-1',
    closed: false as boolean,
    caughtUpSocket: undefined as Socket | undefined,
    ctx: {
      connection: {
        hasRelayFeature: (f: number) => features.includes(f),
        sendRoom: (_room: string, bytes: Uint8Array) => roomSends.push(bytes),
      },
    } as unknown as ClientContext,
    storeStillMissing: (through: number) => stored.push(through),
  } satisfies MissingHistoryHost
  return { missing: new MissingHistory(host), host, stored, roomSends }
}

describe('missing history', () => {
  it('wants no snapshot and holds nothing while the history is whole', () => {
    const { missing } = setup()
    expect(missing.whole).toBe(true)
    expect(missing.wants(100)).toBe(false)
    expect(missing.holdUpdate(false)).toBe('apply')
  })

  it('holds updates after a compacted row until a snapshot covering it is applied, storing what is missing meanwhile (a restart mid-catch-up)', () => {
    const { missing, stored } = setup()
    missing.compactedRow(21)
    // Stored at once: closed now, the device must not come back believing its history whole.
    expect(stored).toEqual([21])
    missing.compactedRow(15)
    expect(stored).toEqual([21])
    expect(missing.holding).toBe(true)
    expect(missing.wants(10)).toBe(true)
    expect(missing.holdUpdate(false)).toBe('hold')
    missing.snapshotApplied(20)
    expect(missing.holdUpdate(false)).toBe('hold')
    missing.snapshotApplied(21)
    expect(missing.holding).toBe(false)
    expect(missing.holdUpdate(false)).toBe('apply')
    expect(stored).toEqual([21, 0])
    expect(missing.whole).toBe(true)
  })

  it('still gathers a later snapshot covering more until the catch-up is applied (a merged compacted run)', () => {
    const { missing } = setup()
    missing.compactedRow(21)
    missing.snapshotApplied(22)
    // Row 21 may stand for rows through 28: a newer snapshot covering more is taken too.
    expect(missing.wants(28)).toBe(true)
    expect(missing.wants(22)).toBe(false)
    missing.catchUpApplied()
    expect(missing.wants(28)).toBe(false)
  })

  it('stops holding once caught up without a snapshot, remembers what is missing, and takes one covering it later', () => {
    const { missing, stored } = setup()
    missing.compactedRow(30)
    expect(missing.stopHolding()).toBe(true)
    expect(missing.holding).toBe(false)
    expect(missing.whole).toBe(false)
    expect(stored).toEqual([30])
    expect(missing.holdUpdate(false)).toBe('apply')
    missing.catchUpApplied()
    expect(missing.wants(29)).toBe(false)
    expect(missing.wants(30)).toBe(true)
    missing.snapshotApplied(31)
    expect(missing.whole).toBe(true)
    expect(stored).toEqual([30, 0])
    expect(missing.stopHolding()).toBe(false)
  })

  it('remembers what is missing across a restart', () => {
    const { missing } = setup()
    missing.restore(30)
    expect(missing.whole).toBe(false)
    expect(missing.wants(30)).toBe(true)
    expect(missing.wants(5)).toBe(false)
  })

  it('applies updates as they come once the held ones reach their bound, and says so once', () => {
    const { missing } = setup()
    missing.compactedRow(5)
    expect(missing.holdUpdate(true)).toBe('overflow')
    expect(missing.holdUpdate(false)).toBe('apply')
    // The snapshot is still wanted; once applied, a later catch-up holds again.
    expect(missing.wants(5)).toBe(true)
    missing.snapshotApplied(5)
    missing.compactedRow(9)
    expect(missing.holdUpdate(false)).toBe('hold')
  })

  it('declines snapshot parts once per connection, only when caught up and whole', async () => {
    const { missing, host } = setup()
    missing.declineParts()
    const first = new Socket()
    host.caughtUpSocket = first
    missing.compactedRow(3)
    missing.declineParts()
    expect(first.sent).toEqual([])
    missing.snapshotApplied(3)
    missing.declineParts()
    missing.declineParts()
    expect(first.sent).toEqual([writeWantParts(false)])
    const second = new Socket()
    host.caughtUpSocket = second
    missing.catchUpApplied()
    expect(second.sent).toHaveLength(1)
    // A snapshot that fills what was still missing declines on the connection it came on, soon.
    const third = new Socket()
    host.caughtUpSocket = third
    missing.compactedRow(8)
    missing.stopHolding()
    missing.snapshotApplied(8)
    expect(third.sent).toEqual([])
    await Promise.resolve()
    expect(third.sent).toHaveLength(1)
  })

  it('declines nothing on a relay without snapshot parts, or once closed', () => {
    const old = setup([])
    old.host.caughtUpSocket = new Socket()
    old.missing.declineParts()
    expect(old.host.caughtUpSocket.sent).toEqual([])
    const closing = setup()
    closing.host.caughtUpSocket = new Socket()
    closing.host.closed = true
    closing.missing.declineParts()
    expect(closing.host.caughtUpSocket.sent).toEqual([])
  })

  it('asks to be spared parts in the catch-up only when whole and the relay can', () => {
    const { missing, roomSends } = setup()
    missing.askToSpareParts()
    expect(roomSends).toEqual([writeWantParts(WantParts.SpareUnlessNeeded)])
    missing.restore(4)
    missing.askToSpareParts()
    expect(roomSends).toHaveLength(1)
    const old = setup([RelayFeature.SnapshotParts])
    old.missing.askToSpareParts()
    expect(old.roomSends).toEqual([])
  })
})
