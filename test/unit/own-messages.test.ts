import { describe, expect, it } from 'vitest'
import { decodeSentEnvelope, encodeOwn, encodeSentEnvelope, keyOf } from '../../src/client/conversation-record.js'
import { OwnMessages, type Put } from '../../src/client/own-messages.js'

const CONV = 'conv-1'
const rowsOf = (puts: Put[]) => puts.map(([key, value]) => ({ key, row: value && decodeSentEnvelope(value) }))

describe('own messages', () => {
  it('stores one row per envelope, naming its messages, pending', () => {
    const own = new OwnMessages(CONV)
    const puts: Put[] = []
    own.sealed([{ envelopeKey: 'e1', msgIds: ['u.1', 'u.2'] }], puts)
    expect(rowsOf(puts)).toEqual([{ key: keyOf.sent(CONV, 'u.1', 'e1'), row: expect.objectContaining({ envelopeKey: 'e1', seq: 0, failure: '', msgIds: ['u.1', 'u.2'] }) }])
    expect(own.get('u.2')).toEqual({ envelopeKey: 'e1', seq: 0, failure: '' })
  })

  it('moves a message sent again out of its old envelope’s row, and deletes that row once it names nothing', () => {
    const own = new OwnMessages(CONV)
    own.sealed([{ envelopeKey: 'e1', msgIds: ['u.1', 'u.2'] }], [])
    const again: Put[] = []
    own.sealed([{ envelopeKey: 'e2', msgIds: ['u.1'] }], again)
    expect(rowsOf(again)).toEqual([
      { key: keyOf.sent(CONV, 'u.1', 'e2'), row: expect.objectContaining({ msgIds: ['u.1'] }) },
      // The old row keeps its key and names only what is still in it.
      { key: keyOf.sent(CONV, 'u.1', 'e1'), row: expect.objectContaining({ msgIds: ['u.2'] }) },
    ])
    expect(own.inEnvelope('e1').map(([id]) => id)).toEqual(['u.2'])
    const last: Put[] = []
    own.sealed([{ envelopeKey: 'e3', msgIds: ['u.2'] }], last)
    expect(last).toContainEqual([keyOf.sent(CONV, 'u.1', 'e1'), null])
  })

  it('writes a ✓ or a failure of the messages in an envelope into its row', () => {
    const own = new OwnMessages(CONV)
    own.sealed([{ envelopeKey: 'e1', msgIds: ['u.1', 'u.2'] }], [])
    for (const [, state] of own.inEnvelope('e1')) state.seq = 42
    const puts: Put[] = []
    own.rowPuts('e1', puts)
    expect(rowsOf(puts)[0]!.row).toEqual(expect.objectContaining({ seq: 42, msgIds: ['u.1', 'u.2'] }))
  })

  it('keeps a batch that failed to store in memory only, failed, in no envelope', () => {
    const own = new OwnMessages(CONV)
    own.failedToStore(['u.1'], 'storage failed: disk full')
    expect(own.get('u.1')).toEqual({ envelopeKey: '', seq: 0, failure: 'storage failed: disk full' })
    const puts: Put[] = []
    own.rowPuts('', puts)
    expect(puts).toEqual([])
    expect(own.failedWith('u.1')).toEqual(['u.1'])
  })

  it('retries a failed message with the other failed messages of its envelope, not the ones that went through', () => {
    const own = new OwnMessages(CONV)
    own.sealed([{ envelopeKey: 'e1', msgIds: ['u.1', 'u.2', 'u.3'] }], [])
    own.get('u.1')!.failure = 'refused'
    own.get('u.3')!.failure = 'refused'
    expect(own.failedWith('u.1')).toEqual(['u.1', 'u.3'])
  })

  it('forgets a discarded message: its envelope’s row names the rest', () => {
    const own = new OwnMessages(CONV)
    own.sealed([{ envelopeKey: 'e1', msgIds: ['u.1', 'u.2'] }], [])
    own.delete('u.1')
    const puts: Put[] = []
    own.rowPuts('e1', puts)
    expect(rowsOf(puts)[0]!.row?.msgIds).toEqual(['u.2'])
    expect(own.has('u.1')).toBe(false)
  })

  it('fails the messages of envelopes refused for good, and marks those refused as stale to go again', () => {
    const own = new OwnMessages(CONV)
    own.sealed([{ envelopeKey: 'e1', msgIds: ['u.1', 'u.2'] }, { envelopeKey: 'e2', msgIds: ['u.3'] }], [])
    // u.2 left e1 (sent again in e3): a refusal of e1 is not its refusal.
    own.sealed([{ envelopeKey: 'e3', msgIds: ['u.2'] }], [])
    const gone = own.refused(['e1', 'e9'], false, 'quota exceeded: room full')
    expect(gone.ids).toEqual(['u.1'])
    expect([...gone.envelopes]).toEqual(['e1'])
    expect(own.get('u.1')).toEqual(expect.objectContaining({ refused: true, failure: 'quota exceeded: room full' }))
    const stale = own.refused(['e2'], true, 'stale epoch')
    expect(stale.ids).toEqual(['u.3'])
    expect(own.get('u.3')).toEqual(expect.objectContaining({ stale: true, failure: '' }))
  })

  it('fails every pending message when the conversation is denied, and only those', () => {
    const own = new OwnMessages(CONV)
    own.sealed([{ envelopeKey: 'e1', msgIds: ['u.1'] }, { envelopeKey: 'e2', msgIds: ['u.2'] }], [])
    own.get('u.1')!.seq = 5
    const puts: Put[] = []
    own.failPending('not a member', puts)
    expect(own.get('u.1')!.failure).toBe('')
    expect(own.get('u.2')!.failure).toBe('not a member')
    expect(rowsOf(puts)).toEqual([{ key: keyOf.sent(CONV, 'u.2', 'e2'), row: expect.objectContaining({ failure: 'not a member', msgIds: ['u.2'] }) }])
  })

  it('loads rows per envelope and turns format-1 rows (one per message) into them', () => {
    const own = new OwnMessages(CONV)
    const sent: Array<[string, Uint8Array]> = [[keyOf.sent(CONV, 'u.1', 'e1'), encodeSentEnvelope({ envelopeKey: 'e1', seq: 7, failure: '', msgIds: ['u.1', 'u.2'] })]]
    const legacy: Array<[string, Uint8Array]> = [[keyOf.own(CONV, 'u.9'), encodeOwn({ envelopeKey: 'e9', seq: 0, failure: 'refused' })]]
    const tidy = own.load(legacy, sent)
    expect(own.get('u.2')).toEqual(expect.objectContaining({ envelopeKey: 'e1', seq: 7 }))
    expect(tidy).toContainEqual([keyOf.own(CONV, 'u.9'), null])
    expect(rowsOf(tidy).find((r) => r.row?.envelopeKey === 'e9')?.row).toEqual(expect.objectContaining({ failure: 'refused', msgIds: ['u.9'] }))
    // A row that names only its own messages is left as it is.
    expect(tidy.some(([key]) => key === keyOf.sent(CONV, 'u.1', 'e1'))).toBe(false)
  })

  it('keeps the most advanced state of a message two rows name, and rewrites the row that is behind', () => {
    const own = new OwnMessages(CONV)
    // Refused as stale in e1, then sealed again in e2 and stored (✓): both rows survived a crash.
    const sent: Array<[string, Uint8Array]> = [
      [keyOf.sent(CONV, 'u.1', 'e1'), encodeSentEnvelope({ envelopeKey: 'e1', seq: 0, failure: '', stale: true, msgIds: ['u.1'] })],
      [keyOf.sent(CONV, 'u.1', 'e2'), encodeSentEnvelope({ envelopeKey: 'e2', seq: 12, failure: '', msgIds: ['u.1'] })],
    ]
    const tidy = own.load([], sent.reverse())
    expect(own.get('u.1')).toEqual(expect.objectContaining({ envelopeKey: 'e2', seq: 12 }))
    expect(tidy).toEqual([[keyOf.sent(CONV, 'u.1', 'e1'), null]])
  })
})
