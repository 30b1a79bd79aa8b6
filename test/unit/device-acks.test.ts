/**
 * The device ack as the relay receives it. The socket is the outside world (a stand-in that
 * keeps the frames sent); the page's `document` is faked as in page-visibility.test.ts.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import { DeviceAcks } from '../../src/client/device-acks.js'
import { readDeviceAck, RoomMessage } from '../../src/shared/room-messages.js'
import { StrictReader } from '../../src/shared/wire.js'
import { offPage, onPage } from '../fixtures/fake-document.js'

afterEach(() => {
  offPage()
  vi.useRealTimers()
})

function acksTo(options: { readReceipts?: boolean; open?: () => boolean } = {}) {
  const sent: Array<{ device: string; stored: number; read: number }> = []
  const socket = {
    send(data: Uint8Array) {
      const r = new StrictReader(data)
      expect(r.varUint()).toBe(RoomMessage.DeviceAck)
      sent.push(readDeviceAck(r))
    },
  }
  const acks = new DeviceAcks({
    deviceId: 'device-1',
    readReceipts: options.readReceipts ?? true,
    closed: false,
    socket: () => ((options.open ?? (() => true))() ? socket : undefined),
  })
  return { acks, sent }
}

describe('device acks', () => {
  it('sends one ack for a burst of stored rows, with the highest, within 50 ms', () => {
    vi.useFakeTimers()
    const { acks, sent } = acksTo()
    for (let seq = 1; seq <= 20; seq++) {
      acks.stored(seq)
      acks.schedule()
    }
    expect(sent).toEqual([])
    vi.advanceTimersByTime(50)
    expect(sent).toEqual([{ device: 'device-1', stored: 20, read: 0 }])
    vi.advanceTimersByTime(500)
    expect(sent).toHaveLength(1)
  })

  it('never says read past stored: blue ✓✓ does not run ahead of ✓✓', () => {
    const { acks, sent } = acksTo()
    acks.stored(5)
    expect(acks.read(9)).toBe(true)
    expect(acks.read(7)).toBe(false)
    acks.schedule()
    acks.sendNow()
    expect(sent).toEqual([{ device: 'device-1', stored: 5, read: 5 }])
  })

  it('sends no read position when read receipts are off', () => {
    const { acks, sent } = acksTo({ readReceipts: false })
    acks.resume(3, 3)
    acks.schedule()
    acks.sendNow()
    expect(sent).toEqual([{ device: 'device-1', stored: 3, read: 0 }])
  })

  it('claims nothing more as stored once a commit of received rows failed', () => {
    const { acks, sent } = acksTo()
    acks.stored(4)
    acks.storeFailedOnce()
    acks.stored(9)
    acks.schedule()
    acks.sendNow()
    expect(acks.storedSeq).toBe(4)
    expect(sent).toEqual([{ device: 'device-1', stored: 4, read: 0 }])
  })

  it('drops an ack while the socket is closed; the next says it all', () => {
    let open = false
    const { acks, sent } = acksTo({ open: () => open })
    acks.stored(2)
    acks.schedule()
    acks.sendNow()
    expect(sent).toEqual([])
    open = true
    acks.stored(6)
    acks.schedule()
    acks.sendNow()
    expect(sent).toEqual([{ device: 'device-1', stored: 6, read: 0 }])
  })

  it('sends a waiting ack at once when the page is hidden, and stops listening when stopped', () => {
    vi.useFakeTimers()
    const page = onPage()
    const { acks, sent } = acksTo()
    acks.stored(1)
    acks.schedule()
    page.set('hidden')
    expect(sent).toHaveLength(1)
    acks.stop()
    expect(page.listening).toBe(0)
  })

  it('sends nothing when nothing is scheduled', () => {
    const { acks, sent } = acksTo()
    acks.stored(8)
    acks.sendNow()
    expect(sent).toEqual([])
  })
})
