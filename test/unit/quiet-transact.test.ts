import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { rowsToStore, transactWithoutUpdate } from '../../src/client/quiet-transact.js'

const REMOTE = Symbol('remote')

/** Updates of another device's document, as they would arrive. */
function received(n: number): Uint8Array[] {
  const source = new Y.Doc()
  const out: Uint8Array[] = []
  source.on('update', (u: Uint8Array) => out.push(u))
  for (let i = 0; i < n; i++) source.getMap('messages').set(`m${i}`, { t: `message ${i}` })
  return out
}

describe('a receive transaction without re-encoding', () => {
  it('skips the update event when every listener is ours, and the received updates rebuild the same document', () => {
    const doc = new Y.Doc()
    const events: unknown[] = []
    const ours = (_u: Uint8Array, origin: unknown) => events.push(origin)
    doc.on('update', ours)
    const updates = received(20)
    const quiet = transactWithoutUpdate(doc, REMOTE, new Set([ours]), () => true, () => {
      for (const u of updates) Y.applyUpdate(doc, u, REMOTE)
    })
    expect(quiet).toBe(true)
    expect(events).toEqual([])
    const replay = new Y.Doc()
    for (const u of updates) Y.applyUpdate(replay, u)
    expect(replay.getMap('messages').toJSON()).toEqual(doc.getMap('messages').toJSON())
    // Listeners are back: the next change is reported.
    doc.getMap('messages').set('local', { t: 'mine' })
    expect(events).toEqual([null])
  })

  it('still encodes when an app listens to the document', () => {
    const doc = new Y.Doc()
    const ours = () => {}
    const app: Uint8Array[] = []
    doc.on('update', ours)
    doc.on('update', (u: Uint8Array) => app.push(u))
    const quiet = transactWithoutUpdate(doc, REMOTE, new Set([ours]), () => true, () => {
      for (const u of received(3)) Y.applyUpdate(doc, u, REMOTE)
    })
    expect(quiet).toBe(false)
    expect(app).toHaveLength(1)
  })

  it('still encodes when the caller withdraws at the end (an apply failed part-way)', () => {
    const doc = new Y.Doc()
    const events: Uint8Array[] = []
    const ours = (u: Uint8Array) => events.push(u)
    doc.on('update', ours)
    const quiet = transactWithoutUpdate(doc, REMOTE, new Set([ours]), () => false, () => {
      for (const u of received(3)) Y.applyUpdate(doc, u, REMOTE)
    })
    expect(quiet).toBe(false)
    expect(events).toHaveLength(1)
  })

  it('reports a write an observer makes in reaction, in its own transaction', () => {
    const doc = new Y.Doc()
    const events: Array<{ origin: unknown; update: Uint8Array }> = []
    const ours = (update: Uint8Array, origin: unknown) => events.push({ origin, update })
    doc.on('update', ours)
    const messages = doc.getMap('messages')
    messages.observe((e) => {
      if (e.transaction.origin === REMOTE) doc.getMap('seen').set('count', messages.size)
    })
    const quiet = transactWithoutUpdate(doc, REMOTE, new Set([ours]), () => true, () => {
      for (const u of received(5)) Y.applyUpdate(doc, u, REMOTE)
    })
    expect(quiet).toBe(true)
    expect(events.map((e) => e.origin)).toEqual([null])
    const other = new Y.Doc()
    Y.applyUpdate(other, events[0]!.update)
    expect(other.getMap('seen').get('count')).toBe(5)
  })

  it('skips nothing when called inside a transaction already open', () => {
    const doc = new Y.Doc()
    const events: unknown[] = []
    const ours = (_u: Uint8Array, origin: unknown) => events.push(origin)
    doc.on('update', ours)
    let quiet = true
    doc.transact(() => {
      doc.getMap('messages').set('local', 1)
      quiet = transactWithoutUpdate(doc, REMOTE, new Set([ours]), () => true, () => {
        for (const u of received(2)) Y.applyUpdate(doc, u, REMOTE)
      })
    }, 'outer')
    expect(quiet).toBe(false)
    expect(events).toEqual(['outer'])
  })

  it('keeps in the log what waited in Yjs under an encoded batch and integrated under a quiet one', () => {
    const [first, second] = received(2)
    const doc = new Y.Doc()
    const log: Uint8Array[] = []
    const app: Uint8Array[] = []
    const appListener = (u: Uint8Array) => app.push(u)
    // An app listens: Yjs encodes this batch, and the second update waits for the first.
    doc.on('update', appListener)
    const ours = new Set<unknown>()
    const loud = transactWithoutUpdate(doc, REMOTE, ours, () => true, () => Y.applyUpdate(doc, second!, REMOTE))
    expect(loud).toBe(false)
    log.push(...rowsToStore(loud, [second!], app.splice(0), doc))
    doc.off('update', appListener)
    // The next batch is quiet and integrates both.
    const quiet = transactWithoutUpdate(doc, REMOTE, ours, () => true, () => Y.applyUpdate(doc, first!, REMOTE))
    expect(quiet).toBe(true)
    log.push(...rowsToStore(quiet, [first!], [], doc))
    expect(doc.getMap('messages').size).toBe(2)
    const reloaded = new Y.Doc()
    for (const row of log) Y.applyUpdate(reloaded, row)
    expect(reloaded.getMap('messages').toJSON()).toEqual(doc.getMap('messages').toJSON())
  })
})
