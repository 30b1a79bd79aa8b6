import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { applyRows, checkRows, RowLocator, type RowsMessage } from '../../src/client/outer-rows.js'
import { ErrorCode, PetrelError } from '../../src/shared/errors.js'
import { envelopeKey, OUTER_LOG, OUTER_RECORDS } from '../../src/shared/outer-keys.js'

const PROVIDER = Symbol('provider')

/** A sending device's outer document: each write is one row, as the relay stores them. */
function sender(client = 1001) {
  const doc = new Y.Doc()
  doc.clientID = client
  const rows: Uint8Array[] = []
  doc.on('update', (u: Uint8Array) => rows.push(u))
  const write = (root: string) => {
    const key = envelopeKey(client, Y.getState(doc.store, client))
    doc.getMap<Uint8Array>(root).set(key, new Uint8Array([1, 2, 3]))
    return key
  }
  return { doc, rows, envelope: () => write(OUTER_LOG), record: () => write(OUTER_RECORDS) }
}

const rows = (update: Uint8Array, index: RowsMessage['index'] = [], parts: number[] = []): RowsMessage => ({ index, update, parts })

/** An update of one client's GC placeholder over clocks [clock, clock + len), as the relay writes a compacted row. */
function placeholder(client: number, clock: number, len: number): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 1) // one struct group
  encoding.writeVarUint(e, 1) // one struct
  encoding.writeVarUint(e, client)
  encoding.writeVarUint(e, clock)
  encoding.writeUint8(e, 0) // GC
  encoding.writeVarUint(e, len)
  encoding.writeVarUint(e, 0) // empty delete set
  return encoding.toUint8Array(e)
}

const malformed = (fn: () => unknown) => {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(PetrelError)
    return (err as PetrelError).code
  }
  throw new Error('accepted')
}

describe('outer rows from the relay', () => {
  it('applies envelopes and records and names the keys they added, without Yjs encoding them again', () => {
    const alice = sender()
    const env = alice.envelope()
    const rec = alice.record()
    const outer = new Y.Doc()
    const ours = () => {}
    outer.on('update', ours)
    const msg = rows(Y.mergeUpdates(alice.rows))
    const { clients, compacted } = checkRows(msg, outer, true)
    expect(clients).toEqual([1001])
    expect(compacted).toEqual([])
    const applied = applyRows(outer, msg.update, clients, PROVIDER, [ours])
    expect(applied).toMatchObject({ logKeys: [env], recordKeys: [rec], quiet: true, encoded: undefined, added: true })
    expect(outer.getMap(OUTER_LOG).get(env)).toEqual(new Uint8Array([1, 2, 3]))
  })

  it('says rows it already holds added nothing', () => {
    const alice = sender()
    alice.envelope()
    const outer = new Y.Doc()
    const msg = rows(alice.rows[0]!)
    applyRows(outer, msg.update, checkRows(msg, outer, false).clients, PROVIDER, [])
    expect(applyRows(outer, msg.update, checkRows(msg, outer, false).clients, PROVIDER, [])).toMatchObject({ logKeys: [], recordKeys: [], added: false })
  })

  it('names a row that waited in Yjs for its predecessor when the predecessor comes, not before', () => {
    const alice = sender()
    const first = alice.envelope()
    const second = alice.envelope()
    const outer = new Y.Doc()
    const late = rows(alice.rows[1]!)
    const waiting = applyRows(outer, late.update, checkRows(late, outer, false).clients, PROVIDER, [])
    // Nothing integrated, but it waits: the caller must store the row as received.
    expect(waiting).toMatchObject({ logKeys: [], added: true })
    expect(outer.store.pendingStructs).not.toBeNull()
    const early = rows(alice.rows[0]!)
    const both = applyRows(outer, early.update, checkRows(early, outer, false).clients, PROVIDER, [])
    expect(both.logKeys.sort()).toEqual([first, second].sort())
  })

  it("hands Yjs's encoding over when an app listens to the document too", () => {
    const alice = sender()
    alice.envelope()
    const outer = new Y.Doc()
    const app: Uint8Array[] = []
    outer.on('update', (u: Uint8Array) => app.push(u))
    const msg = rows(alice.rows[0]!)
    const applied = applyRows(outer, msg.update, checkRows(msg, outer, false).clients, PROVIDER, [])
    expect(applied.quiet).toBe(false)
    expect(applied.encoded).toBeInstanceOf(Uint8Array)
    expect(app).toHaveLength(1)
  })

  it('refuses rows that delete, and applies nothing', () => {
    const alice = sender()
    const key = alice.envelope()
    alice.doc.getMap(OUTER_LOG).delete(key)
    const outer = new Y.Doc()
    const msg = rows(Y.mergeUpdates(alice.rows))
    expect(malformed(() => checkRows(msg, outer, false))).toBe(ErrorCode.Malformed)
  })

  it('refuses rows writing anything but binary entries of the log and the records', () => {
    const other = new Y.Doc()
    const updates: Uint8Array[] = []
    other.on('update', (u: Uint8Array) => updates.push(u))
    other.getMap('messages').set('a.1', new Uint8Array([1]))
    other.getMap(OUTER_LOG).set('a.2', 'plaintext' as unknown as Uint8Array)
    other.getMap(OUTER_RECORDS).set('a.3', new Y.Map() as unknown as Uint8Array)
    other.getText('notes').insert(0, 'hi')
    const outer = new Y.Doc()
    expect(updates).toHaveLength(4)
    for (const u of updates) expect(malformed(() => checkRows(rows(u), outer, false))).toBe(ErrorCode.Malformed)
    expect(outer.store.clients.size).toBe(0)
  })

  it('refuses bytes that are not an update with a typed error', () => {
    const outer = new Y.Doc()
    for (const bytes of [new Uint8Array([]), new Uint8Array([5, 1]), new Uint8Array([1, 1, 7, 0, 9, 200])]) {
      expect(malformed(() => checkRows(rows(bytes), outer, false))).toBe(ErrorCode.Malformed)
    }
  })

  it('reports compacted rows it never held while catching up, but not live, not parts, not what it holds', () => {
    const outer = new Y.Doc()
    const index = [{ seq: 7, client: 55, clock: 0, len: 3 }]
    const gc = placeholder(55, 0, 3)
    expect(checkRows(rows(gc, index), outer, true).compacted).toEqual([7])
    // Live, a placeholder is a refused write.
    expect(checkRows(rows(gc, index), outer, false).compacted).toEqual([])
    // A part's row the relay spared this device.
    expect(checkRows(rows(gc, index, [7]), outer, true).compacted).toEqual([])
    // Held already: nothing is missing.
    const alice = sender(55)
    alice.envelope()
    alice.envelope()
    alice.envelope()
    Y.applyUpdate(outer, Y.mergeUpdates(alice.rows))
    expect(checkRows(rows(gc, index), outer, true).compacted).toEqual([])
  })

  it('finds the row an id-derived key came in', () => {
    const index = [
      { seq: 4, client: 9, clock: 2, len: 5 },
      { seq: 3, client: 9, clock: 0, len: 2 },
      { seq: 5, client: 10, clock: 0, len: 1 },
    ]
    const rows = new RowLocator(index)
    expect(rows.seqOfKey(envelopeKey(9, 1))).toBe(3)
    expect(rows.seqOfKey(envelopeKey(9, 6))).toBe(4)
    expect(rows.seqOfKey(envelopeKey(10, 0))).toBe(5)
    expect(rows.seqOfKey(envelopeKey(9, 7))).toBeUndefined()
    expect(rows.seqOfKey(envelopeKey(11, 0))).toBeUndefined()
  })

  it('refuses an index naming clocks the update does not hold', () => {
    const outer = new Y.Doc()
    const gc = placeholder(55, 0, 3)
    for (const row of [
      { seq: 1, client: 56, clock: 0, len: 1 },
      { seq: 1, client: 55, clock: 2, len: 2 },
      { seq: 1, client: 55, clock: 0, len: 0 },
    ]) {
      expect(malformed(() => checkRows(rows(gc, [row]), outer, true))).toBe(ErrorCode.Malformed)
    }
  })

  it("checks a hostile relay's page of 100,000 placeholders and as many index entries in linear time", () => {
    // One-clock placeholders over 25 clients' runs, an index entry for each: a linear search of
    // the index per placeholder took 5.9 s for 40,000 of them against 100,000 entries.
    const e = encoding.createEncoder()
    const clients = 25
    encoding.writeVarUint(e, clients)
    for (let c = clients; c >= 1; c--) {
      const n = c === 1 ? 40_000 : 2_500
      encoding.writeVarUint(e, n)
      encoding.writeVarUint(e, c)
      encoding.writeVarUint(e, 0)
      for (let i = 0; i < n; i++) {
        encoding.writeUint8(e, 0)
        encoding.writeVarUint(e, 1)
      }
    }
    encoding.writeVarUint(e, 0)
    const index: RowsMessage['index'] = []
    for (let c = 1; c <= clients; c++) for (let i = 0; i < (c === 1 ? 40_000 : 2_500); i++) index.push({ seq: index.length + 1, client: c, clock: i, len: 1 })
    const t0 = performance.now()
    const { compacted } = checkRows(rows(encoding.toUint8Array(e), index), new Y.Doc(), true)
    expect(performance.now() - t0).toBeLessThan(1_000)
    expect(compacted).toHaveLength(100_000)
  })
})
