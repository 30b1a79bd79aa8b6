import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { decodeGapFills, encodeGapFills } from '../../src/client/conversation-record.js'
import { GapFills } from '../../src/client/gap-fills.js'

/** One change, from a client of its own: the same bytes each time for one value. */
function change(value: string): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = 7 + value.charCodeAt(0)
  doc.getMap('app').set('k', value)
  return Y.encodeStateAsUpdate(doc)
}

const made: GapFills[] = []
afterEach(() => {
  for (const f of made.splice(0)) f.close()
})

function fills() {
  const sent: Uint8Array[] = []
  const saved: Uint8Array[][] = []
  const f = new GapFills({
    closed: false,
    sealForOthers: async (u) => {
      sent.push(u)
    },
    saveFills: (list) => saved.push(list),
    report: (err) => {
      throw err
    },
  })
  made.push(f)
  return { f, sent, saved }
}

const settle = () => new Promise((r) => setTimeout(r, 0))

describe('gap fills', () => {
  it('waits for room, then sends each refused change once, and stores what still waits', async () => {
    const { f, sent, saved } = fills()
    f.refused(change('a'), false)
    f.refused(change('a'), false)
    f.refused(change('b'), true)
    expect(f.size).toBe(2)
    expect(saved.at(-1)).toHaveLength(2)
    expect(sent).toEqual([])
    f.roomAgain(5)
    await settle()
    expect(sent).toHaveLength(2)
    // The stale one as it was; the other as its tombstone (nothing of it shows).
    expect(sent).toContainEqual(change('b'))
    const doc = new Y.Doc()
    for (const u of sent) Y.applyUpdate(doc, u)
    expect(doc.getMap('app').get('k')).toBe('b')
    expect(saved.at(-1)).toEqual([])
  })

  it('takes an ack of a row acknowledged before for no sign of room', async () => {
    const { f, sent } = fills()
    f.roomAgain(9)
    f.refusalHandled()
    f.refused(change('a'), false)
    f.roomAgain(9)
    await settle()
    expect(sent).toEqual([])
    f.roomAgain(10)
    await settle()
    expect(sent).toHaveLength(1)
  })

  it('sends at once what a commit refused beside a row of ours it stored (its ack came first)', async () => {
    const { f, sent } = fills()
    f.roomAgain(3)
    f.refused(change('a'), false)
    f.refusalHandled()
    await settle()
    expect(sent).toHaveLength(1)
    // The next refusal, with no ack since, waits.
    f.refused(change('b'), false)
    f.refusalHandled()
    await settle()
    expect(sent).toHaveLength(1)
  })

  it('keeps what waits across a restart', async () => {
    const stored = encodeGapFills([change('a')])
    const { f, sent } = fills()
    f.load(decodeGapFills(stored))
    f.roomAgain(1)
    await settle()
    expect(sent).toHaveLength(1)
    expect(() => decodeGapFills(stored.subarray(0, stored.length - 1))).toThrow(expect.objectContaining({ code: 'malformed' }))
  })
})
