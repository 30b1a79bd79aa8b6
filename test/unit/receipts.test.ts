import { describe, expect, it } from 'vitest'
import { ReceiptBook, type ReceiptStatus } from '../../src/client/receipts.js'
import type { MembershipState, MemberState } from '../../src/shared/membership.js'

/** Only what ticks read: who is a member since when, on which devices. */
function membership(members: Record<string, { joinedAt: number; joinedSeq?: number; devices: string[] }>): MembershipState {
  const map = new Map<string, MemberState>()
  for (const [userId, m] of Object.entries(members)) {
    map.set(userId, { joinedAt: m.joinedAt, joinedSeq: m.joinedSeq, devices: new Map(m.devices.map((d) => [d, 0])) } as unknown as MemberState)
  }
  return { members: map } as MembershipState
}

/** The rule as the docs state it, written the slow way for comparison. */
function expected(book: ReceiptBook, ms: MembershipState, author: string, sentAt: number, seq: number, withRead: boolean): ReceiptStatus {
  const recipients = [...ms.members].filter(([u, m]) => u !== author && (m.joinedSeq !== undefined && seq > 0 ? m.joinedSeq < seq : m.joinedAt <= sentAt))
  if (recipients.length === 0) return 'sent'
  const has = (devices: Iterable<string>, field: 'stored' | 'read') => [...devices].some((d) => (book.byDevice.get(d)?.[field] ?? -1) >= seq)
  if (withRead && recipients.every(([, m]) => has(m.devices.keys(), 'read'))) return 'read'
  if (recipients.every(([, m]) => has(m.devices.keys(), 'stored'))) return 'delivered'
  return 'sent'
}

describe('receipt book', () => {
  const ms = membership({
    alice: { joinedAt: 0, devices: ['a1'] },
    bob: { joinedAt: 0, devices: ['b1', 'b2'] },
    carol: { joinedAt: 500, devices: ['c1'] },
  })
  // The same, with relay seqs for the joins (as devices fold them).
  const withSeqs = membership({
    alice: { joinedAt: 0, joinedSeq: 1, devices: ['a1'] },
    bob: { joinedAt: 0, joinedSeq: 2, devices: ['b1', 'b2'] },
    carol: { joinedAt: 500, joinedSeq: 20, devices: ['c1'] },
  })
  const entry = (device: string, stored: number, read: number) => ({ device, stored, read, storedAt: stored, readAt: read })

  it('is delivered once each recipient has one device that stored the message, read once each has one that showed it', () => {
    const book = new ReceiptBook()
    expect(book.status(ms, 'alice', 100, 10, true)).toBe('sent')
    book.merge([entry('b2', 10, 0)])
    expect(book.status(ms, 'alice', 100, 10, true)).toBe('delivered')
    expect(book.status(ms, 'alice', 600, 10, true)).toBe('sent') // carol was a member by then and has nothing
    book.merge([entry('b1', 12, 11)])
    expect(book.status(ms, 'alice', 100, 10, true)).toBe('read')
    expect(book.status(ms, 'alice', 100, 10, false)).toBe('delivered')
    expect(book.status(ms, 'alice', 100, 12, true)).toBe('delivered')
    expect(book.status(ms, 'alice', 100, 13, true)).toBe('sent')
  })

  it('says sent when nobody else was a member yet', () => {
    const alone = membership({ alice: { joinedAt: 0, devices: ['a1'] }, carol: { joinedAt: 500, devices: ['c1'] } })
    const book = new ReceiptBook()
    book.merge([entry('c1', 99, 99)])
    expect(book.status(alone, 'alice', 100, 1, true)).toBe('sent')
  })

  it('counts by relay order where the join has a seq: a joiner whose clock runs ahead is a recipient of what was stored after their join', () => {
    // Bob's clock is an hour ahead of Alice's: by the clocks he joined after her messages.
    const skewed = membership({ alice: { joinedAt: 0, joinedSeq: 1, devices: ['a1'] }, bob: { joinedAt: 3_600_000, joinedSeq: 5, devices: ['b1'] } })
    const book = new ReceiptBook()
    book.merge([entry('b1', 10, 10)])
    expect(book.status(skewed, 'alice', 1000, 8, true)).toBe('read')
    expect(book.recipients(skewed, 'alice', 1000, 8)).toEqual(['bob'])
    // Stored before his join: not his to receive (a 'from-join' member never can).
    expect(book.status(skewed, 'alice', 1000, 4, true)).toBe('sent')
    expect(book.recipients(skewed, 'alice', 1000, 4)).toEqual([])
  })

  it('agrees with the rule written out, over many receipts', () => {
    let seed = 7
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return seed % n
    }
    const book = new ReceiptBook()
    const devices = ['a1', 'b1', 'b2', 'c1']
    for (let step = 0; step < 400; step++) {
      const stored = rand(40)
      book.merge([entry(devices[rand(4)]!, stored, rand(stored + 1))])
      const author = ['alice', 'bob', 'carol'][rand(3)]!
      const sentAt = rand(1000)
      const seq = rand(40)
      for (const withRead of [true, false]) {
        expect(book.status(ms, author, sentAt, seq, withRead)).toBe(expected(book, ms, author, sentAt, seq, withRead))
        expect(book.status(withSeqs, author, sentAt, seq, withRead)).toBe(expected(book, withSeqs, author, sentAt, seq, withRead))
      }
    }
  })
})
