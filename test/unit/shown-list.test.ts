import * as Y from 'yjs'
import { describe, expect, it } from 'vitest'
import { type Message, ShownList, type ShownSource, type StoredMessage } from '../../src/client/shown-list.js'

/** A conversation's state as the list reads it: a real Yjs document, statuses and holds as plain maps. */
function world(userId = 'me') {
  const doc = new Y.Doc()
  const statuses = new Map<string, Message['status']>()
  const hidden = new Set<string>()
  const reads = { count: 0 }
  const messages = doc.getMap<StoredMessage>('messages')
  const profiles = doc.getMap<{ name?: string }>('profiles')
  const source: ShownSource = {
    conversationId: 'c',
    userId,
    messages: () => messages,
    name: (userId) => profiles.get(userId)?.name,
    hidden: (id) => hidden.has(id),
    statusOf: (id) => {
      reads.count++
      return { status: statuses.get(id) ?? 'pending' }
    },
  }
  const list = new ShownList(source)
  // Every write tells the list what it wrote, as the conversation's observer does.
  messages.observe((e) => list.changed(e.keysChanged))
  profiles.observe(() => list.changed())
  let n = 0
  const put = (author: string, h: number, text = `${author}${h}`) => {
    const id = `${author}.${(n++).toString(36)}`
    messages.set(id, { t: text, at: h, h, n, d: 'dev' })
    return id
  }
  const fresh = () => new ShownList(source).messages()
  return { doc, source, profiles, list, statuses, hidden, reads, put, fresh }
}

/** A repeatable random whole number below k (a linear congruential generator). */
function seeded(seed: number): (k: number) => number {
  return (k) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    return seed % k
  }
}

const view = (ms: Message[]) => ms.map((m) => `${m.text}:${m.status}${m.authorName === undefined ? '' : `:${m.authorName}`}`)

describe('shown list', () => {
  it('orders by hybrid clock, then author, then counter, wherever a message arrives', () => {
    const w = world()
    w.put('bob', 20)
    w.put('me', 10)
    expect(w.list.messages().map((m) => m.text)).toEqual(['me10', 'bob20'])
    w.put('alice', 15)
    w.put('alice', 20)
    expect(w.list.messages().map((m) => m.text)).toEqual(['me10', 'alice15', 'alice20', 'bob20'])
  })

  it('stays equal to a list built from scratch through random writes, status changes and holds', () => {
    const w = world()
    const rand = seeded(7)
    const ids: string[] = []
    for (let step = 0; step < 400; step++) {
      const op = rand(10)
      if (op < 5) ids.push(w.put(['me', 'alice', 'bob'][rand(3)]!, rand(50)))
      else if (op === 5 && ids.length > 0) {
        // Told of it as the conversation tells it: all rows, or the ones whose ticks moved.
        const id = ids[rand(ids.length)]!
        w.statuses.set(id, (['sent', 'delivered', 'read', 'failed'] as const)[rand(4)]!)
        if (rand(2) === 0) w.list.statusesChanged()
        else w.list.statusesChanged([id, ids[rand(ids.length)]!])
      } else if (op === 6 && ids.length > 0) {
        // Overwritten with another clock: the entry moves.
        const id = ids[rand(ids.length)]!
        w.source.messages().set(id, { t: `moved ${id}`, at: 0, h: rand(50), n: 0, d: 'dev' })
      } else if (op === 7 && ids.length > 0) {
        const id = ids[rand(ids.length)]!
        w.hidden.add(id)
        w.list.changed()
      } else if (op === 8) w.profiles.set('alice', { name: `Alice ${step}` })
      if (rand(3) === 0) expect(view(w.list.messages()), `step ${step}`).toEqual(view(w.fresh()))
      // The newest few, with and without the whole list built since the last change.
      else if (rand(2) === 0) {
        const k = rand(12)
        expect(view(w.list.last(k)), `step ${step} last ${k}`).toEqual(view(w.fresh().slice(Math.max(0, w.fresh().length - k))))
      }
    }
    expect(view(w.list.messages())).toEqual(view(w.fresh()))
  })

  it('hands out a new array after each change and never alters one it handed out', () => {
    const w = world()
    w.put('alice', 1)
    const before = w.list.messages()
    const tail = w.list.last(5)
    w.put('alice', 2)
    w.put('bob', 3)
    const after = w.list.messages()
    expect(after).not.toBe(before)
    expect(before.map((m) => m.text)).toEqual(['alice1'])
    expect(tail.map((m) => m.text)).toEqual(['alice1'])
    expect(after.map((m) => m.text)).toEqual(['alice1', 'alice2', 'bob3'])
    expect(w.list.last(2).map((m) => m.text)).toEqual(['alice2', 'bob3'])
    expect(w.list.last(0)).toEqual([])
    expect(after[0]).toBe(before[0])
  })

  it("re-reads only this user's rows when ticks move, and keeps every unchanged message the same object", () => {
    const w = world()
    const mine = w.put('me', 1)
    w.put('alice', 2)
    const before = w.list.messages()
    expect(before[0]!.status).toBe('pending')
    w.statuses.set(mine, 'delivered')
    w.list.statusesChanged()
    const after = w.list.messages()
    expect(after).not.toBe(before)
    expect(after[0]!.status).toBe('delivered')
    expect(after[1]).toBe(before[1])
    // Nothing changed: the same list.
    expect(w.list.messages()).toBe(after)
  })

  it('re-reads only the rows named when told whose ticks moved, and every row of this user when not', () => {
    const w = world()
    const [a, b, c] = [w.put('me', 1), w.put('me', 2), w.put('me', 3)]
    expect(view(w.list.messages())).toEqual(['me1:pending', 'me2:pending', 'me3:pending'])
    for (const id of [a, b, c]) w.statuses.set(id, 'sent')
    // An ack of b alone: only b is read again (a and c moved in the source, unannounced).
    w.list.statusesChanged([b])
    expect(view(w.list.messages())).toEqual(['me1:pending', 'me2:sent', 'me3:pending'])
    w.list.statusesChanged([a, 'not.listed'])
    expect(view(w.list.messages())).toEqual(['me1:sent', 'me2:sent', 'me3:pending'])
    // Told nothing specific: every row of this user's.
    w.list.statusesChanged()
    expect(view(w.list.messages())).toEqual(['me1:sent', 'me2:sent', 'me3:sent'])
  })

  it('keeps unchanged messages the same objects through a rebuild, and makes new ones for an entry rewritten or an author renamed', () => {
    const w = world()
    const a1 = w.put('alice', 1)
    const b2 = w.put('bob', 2)
    const b3 = w.put('bob', 3)
    const before = w.list.messages()
    // The list's own objects, also when asked for one by id.
    expect(w.list.message(b2)).toBe(before[1])
    // An entry rewritten rebuilds the list: the others stay the same objects.
    w.source.messages().set(b3, { t: 'edited', at: 3, h: 3, n: 0, d: 'dev' })
    const rebuilt = w.list.messages()
    expect(rebuilt[0]).toBe(before[0])
    expect(rebuilt[1]).toBe(before[1])
    expect(rebuilt[2]).not.toBe(before[2])
    expect(rebuilt[2]!.text).toBe('edited')
    // A name set rebuilds it too: that author's messages are new objects with the name.
    w.profiles.set('bob', { name: 'Bob' })
    const renamed = w.list.messages()
    expect(renamed[0]).toBe(before[0])
    expect(renamed[1]).not.toBe(rebuilt[1])
    expect(renamed.map((m) => m.authorName)).toEqual([undefined, 'Bob', 'Bob'])
    // Asked for by id before the list is read again: the object the list then holds.
    const a4 = w.put('alice', 4)
    const one = w.list.message(a4)
    expect(w.list.messages()[3]).toBe(one)
    expect(w.list.message(a1)).toBe(before[0])
  })

  it('shows no held-back message, and shows it once it is released', () => {
    const w = world()
    const id = w.put('alice', 1)
    w.hidden.add(id)
    w.list.changed()
    expect(w.list.messages()).toEqual([])
    expect(w.list.message(id)).toBeUndefined()
    w.hidden.delete(id)
    w.list.changed()
    expect(w.list.messages().map((m) => m.id)).toEqual([id])
  })

  it('reads the ticks of only the rows it hands out when asked for the newest few', () => {
    const w = world()
    const ids = Array.from({ length: 1000 }, (_, i) => w.put('me', i))
    expect(view(w.list.last(3))).toEqual(['me997:pending', 'me998:pending', 'me999:pending'])
    // Rows made for the other 997 messages were not: their ticks were never read.
    expect(w.reads.count).toBe(3)
    // Every message acked: only the three shown are read again.
    for (const id of ids) w.statuses.set(id, 'sent')
    w.list.statusesChanged(ids)
    w.reads.count = 0
    expect(view(w.list.last(3))).toEqual(['me997:sent', 'me998:sent', 'me999:sent'])
    expect(w.reads.count).toBe(3)
    // The whole list still shows every tick as it is now.
    expect(w.list.messages().every((m) => m.status === 'sent')).toBe(true)
    expect(w.reads.count).toBe(1000)
  })

  it('stays equal to a list built from scratch when only the newest few are read between changes', () => {
    const w = world()
    const rand = seeded(11)
    const ids: string[] = []
    const ticks = ['pending', 'sent', 'delivered', 'read', 'failed'] as const
    for (let step = 0; step < 600; step++) {
      const op = rand(8)
      if (op < 3) ids.push(w.put(['me', 'alice'][rand(2)]!, step + rand(5)))
      else if (op < 6 && ids.length > 0) {
        const named: string[] = []
        for (let i = rand(4); i >= 0; i--) {
          const id = ids[rand(ids.length)]!
          w.statuses.set(id, ticks[rand(ticks.length)]!)
          named.push(id)
        }
        if (rand(5) === 0) w.list.statusesChanged()
        else w.list.statusesChanged(named)
      } else if (op === 6) {
        const k = rand(30)
        const before = w.list.last(k)
        expect(view(before), `step ${step} last ${k}`).toEqual(view(w.fresh().slice(Math.max(0, w.fresh().length - k))))
        // Asked again with nothing changed: the same objects.
        const again = w.list.last(k)
        for (let i = 0; i < again.length; i++) expect(again[i]).toBe(before[i])
      } else if (rand(4) === 0) expect(view(w.list.messages()), `step ${step}`).toEqual(view(w.fresh()))
    }
    expect(view(w.list.messages())).toEqual(view(w.fresh()))
  })
})
