import { describe, expect, it } from 'vitest'
import type { MembershipBook } from '../../src/client/membership-book.js'
import type { Put } from '../../src/client/own-messages.js'
import { sealedOuter, sealedOutbox, writeAs } from '../fixtures/sealed-outbox.js'
import { PositionIndex } from '../../src/client/position-index.js'
import { type AcksHost, applyAck } from '../../src/client/relay-acks.js'
import { envelopeKey, OUTER_RECORDS } from '../../src/shared/outer-keys.js'

const ROOM = 'room-1'

/** This device's `m1`, `m2` sealed in envelope (7, 0) and `m3` in (7, 1); what an ack asks of the rest, recorded. */
function setup(options: { caughtUp?: boolean; cursor?: number } = {}) {
  const outer = sealedOuter()
  const own = sealedOutbox(ROOM)
  const calls: string[] = []
  const stored: Put[][] = []
  const positions = new Map<string, number>()
  let chain: Promise<void> = Promise.resolve()
  const ownBySeq = new PositionIndex()
  const host: AcksHost = {
    outer,
    book: {
      noteSeq: (key: string, seq: number) => {
        if (positions.get(key) === seq) return false
        positions.set(key, seq)
        return true
      },
    } as unknown as MembershipBook,
    own,
    ownBySeq,
    caughtUp: options.caughtUp ?? true,
    cursor: options.cursor ?? 10,
    afterIncoming: (job) => {
      chain = chain.then(job).then(() => undefined)
    },
    roomAgain: () => calls.push('room again'),
    foldRecords: async () => {
      calls.push('fold')
    },
    ownRowStored: (seq) => calls.push(`cursor ${seq}`),
    recordSeqsMoved: () => calls.push('positions'),
    storeSoon: (puts) => stored.push(puts),
    statusesChanged: (ids) => calls.push(`statuses ${ids.join(',')}`),
  }
  return { host, own, outer, calls, stored, ownBySeq, positions, settled: () => chain }
}

const range = (client: number, clock: number, len = 1) => ({ client, clock, len })

describe('relay acks', () => {
  it('gives the messages still in an acknowledged envelope its position (✓), and stores their row', () => {
    const a = setup()
    applyAck(a.host, { seq: 11, ranges: [range(7, 0)] })
    expect(a.own.get('m1')?.seq).toBe(11)
    expect(a.own.get('m2')?.seq).toBe(11)
    expect(a.own.get('m3')?.seq).toBe(0)
    expect(a.ownBySeq.between(10, 11)).toEqual(['m1', 'm2'])
    expect(a.calls).toContain('statuses m1,m2')
    expect(a.stored).toHaveLength(1)
    expect(a.stored[0]!.map(([k]) => k)).toHaveLength(1)
  })

  it('leaves a message that left the envelope, or was refused in it, as it was', () => {
    const a = setup()
    // m1 sent again in another envelope; m3 refused for good.
    a.own.sealed([{ envelopeKey: envelopeKey(7, 2), msgIds: ['m1'] }], [])
    a.own.refused([envelopeKey(7, 1)], false, 'forbidden')
    applyAck(a.host, { seq: 12, ranges: [range(7, 0, 2)] })
    expect(a.own.get('m1')?.seq).toBe(0)
    expect(a.own.get('m2')?.seq).toBe(12)
    expect(a.own.get('m3')).toMatchObject({ seq: 0, refused: true })
  })

  it('ends a failure without a refusal once the relay stores the message', () => {
    const a = setup()
    a.own.get('m3')!.failure = 'not a member'
    applyAck(a.host, { seq: 13, ranges: [range(7, 1)] })
    expect(a.own.get('m3')).toMatchObject({ seq: 13, failure: '' })
  })

  it('notes the position of a record of ours and folds the records again', async () => {
    const a = setup()
    const key = writeAs(a.outer, 3, OUTER_RECORDS, Uint8Array.of(1))
    expect(key).toBe(envelopeKey(3, 0))
    applyAck(a.host, { seq: 14, ranges: [range(3, 0)] })
    await a.settled()
    expect(a.positions.get(key)).toBe(14)
    expect(a.calls.filter((c) => c === 'positions' || c === 'fold')).toEqual(['positions', 'fold'])
    expect(a.stored).toEqual([])
    // The same position again changes nothing.
    applyAck(a.host, { seq: 14, ranges: [range(3, 0)] })
    await a.settled()
    expect(a.calls.filter((c) => c === 'fold')).toHaveLength(1)
  })

  it('moves the cursor only once caught up, and only for a row past it', () => {
    const behind = setup({ caughtUp: false })
    applyAck(behind.host, { seq: 11, ranges: [range(7, 0)] })
    expect(behind.calls.some((c) => c.startsWith('cursor'))).toBe(false)
    const caught = setup({ cursor: 11 })
    applyAck(caught.host, { seq: 11, ranges: [range(7, 0)] })
    expect(caught.calls.some((c) => c.startsWith('cursor'))).toBe(false)
    applyAck(caught.host, { seq: 12, ranges: [range(7, 1)] })
    expect(caught.calls).toContain('cursor 12')
  })
  it('reads a range only as far as this device wrote: a hostile length of 2^53 - 1 acknowledges what it holds, at once', () => {
    const a = setup()
    const t0 = performance.now()
    applyAck(a.host, { seq: 12, ranges: [range(7, 0, Number.MAX_SAFE_INTEGER), range(99, 0, Number.MAX_SAFE_INTEGER)] })
    // Each clock was a turn of the loop: ~110 ms a million, so this was years.
    expect(performance.now() - t0).toBeLessThan(1_000)
    for (const id of ['m1', 'm2', 'm3']) expect(a.own.get(id)?.seq).toBe(12)
  })
})
