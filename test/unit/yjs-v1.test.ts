import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { ErrorCode, PetrelError } from '../../src/shared/errors.js'
import { checkJson } from '../../src/shared/lib0-strict.js'
import {
  buildUpdate,
  encodeStateVector,
  isEmptyUpdate,
  type ParsedUpdate,
  parseStateVector,
  parseUpdate,
  splitUpdate,
} from '../../src/shared/yjs-v1.js'

// ---------- helpers ----------

const hex = (s: string) => Uint8Array.from((s.replace(/[^0-9a-f]/gi, '').match(/../g) ?? []).map((b) => Number.parseInt(b, 16)))
const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ')
const utf8 = (s: string) => new TextEncoder().encode(s)
const varUint = (n: number): number[] => {
  const out: number[] = []
  while (n >= 128) {
    out.push((n % 128) | 0x80)
    n = Math.floor(n / 128)
  }
  out.push(n)
  return out
}
const varStr = (s: string | Uint8Array) => {
  const b = typeof s === 'string' ? utf8(s) : s
  return [...varUint(b.length), ...b]
}
/** One group with the given struct bytes, then an empty delete set. */
const oneGroup = (client: number, clock: number, structs: number[][], ds: number[] = [0]) =>
  Uint8Array.from([1, ...varUint(structs.length), ...varUint(client), ...varUint(clock), ...structs.flat(), ...ds])

/** Runs fn and returns the PetrelError code it threw, or 'ok'; anything else fails the test. */
function outcome(fn: () => unknown): string {
  try {
    fn()
    return 'ok'
  } catch (err) {
    if (!(err instanceof PetrelError)) throw new Error(`non-PetrelError thrown: ${String(err)}`, { cause: err })
    return err.code
  }
}
const expectMalformed = (bytes: Uint8Array) => expect(outcome(() => parseUpdate(bytes))).toBe(ErrorCode.Malformed)

function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
type Rnd = () => number
const int = (r: Rnd, n: number) => Math.floor(r() * n)
const pick = <T>(r: Rnd, xs: readonly T[]): T => xs[int(r, xs.length)]!

// ---------- random Y.Doc workloads ----------

const CHARS = ['a', 'z', ' ', 'é', '中', '😀', '👍🏽', '\uFEFF']
const KEYS = ['k0', 'k1', 'k2', 'k3', 'ключ', '🔑']
const randomString = (r: Rnd) => Array.from({ length: 1 + int(r, 6) }, () => pick(r, CHARS)).join('')

function randomValue(r: Rnd): unknown {
  switch (int(r, 11)) {
    case 0:
      return Uint8Array.from({ length: int(r, 40) }, () => int(r, 256))
    case 1:
      return Uint8Array.from({ length: r() < 0.5 ? 300 : 1200 }, () => int(r, 256))
    case 2:
      return randomString(r)
    case 3:
      return int(r, 1e6) - 5e5
    case 4:
      return r() * 1e6
    case 5:
      return 2 ** 40 + int(r, 1000)
    case 6:
      return { s: randomString(r), n: int(r, 100), nested: { arr: [1, 'x', null, true, false, -0.5] } }
    case 7:
      return [int(r, 10), randomString(r), null, [[]]]
    case 8:
      return pick(r, [true, false, null])
    case 9:
      return BigInt(int(r, 1e9)) * 1_000_000n
    default:
      return 2 ** 31
  }
}

/** Y.Array takes the same values as Y.Map except bigint. */
const arrayValue = (r: Rnd) => {
  const v = randomValue(r)
  return typeof v === 'bigint' ? Number(v) : v
}

function mutate(r: Rnd, doc: Y.Doc): void {
  const m = doc.getMap<unknown>('m')
  const a = doc.getArray<unknown>('a')
  const t = doc.getText('t')
  const x = doc.getXmlFragment('x')
  switch (int(r, 15)) {
    case 0:
    case 1:
    case 2:
      m.set(pick(r, KEYS), randomValue(r))
      return
    case 3:
      m.delete(pick(r, KEYS))
      return
    case 4: {
      const k = `n${int(r, 3)}`
      let inner = m.get(k)
      if (!(inner instanceof Y.Map)) {
        inner = new Y.Map<unknown>()
        m.set(k, inner)
      }
      const im = inner as Y.Map<unknown>
      if (r() < 0.3) im.delete(pick(r, KEYS))
      else im.set(pick(r, KEYS), randomValue(r))
      return
    }
    case 5:
      a.push(Array.from({ length: 1 + int(r, 3) }, () => arrayValue(r)))
      return
    case 6:
      a.insert(int(r, a.length + 1), [arrayValue(r)])
      return
    case 7:
      if (a.length > 0) {
        const i = int(r, a.length)
        a.delete(i, 1 + int(r, Math.min(3, a.length - i)))
      }
      return
    case 8:
      t.insert(int(r, t.length + 1), randomString(r), r() < 0.2 ? { bold: true } : undefined)
      return
    case 9:
      if (t.length > 0) {
        const i = int(r, t.length)
        t.delete(i, 1 + int(r, Math.min(4, t.length - i)))
      }
      return
    case 10:
      if (t.length > 0) {
        const i = int(r, t.length)
        t.format(i, 1 + int(r, t.length - i), { italic: r() < 0.5 ? true : null })
      }
      return
    case 11:
      t.insertEmbed(int(r, t.length + 1), { image: `img${int(r, 10)}` })
      return
    case 12: {
      const kind = int(r, 3)
      const node =
        kind === 0 ? new Y.XmlElement(pick(r, ['p', 'div'])) : kind === 1 ? new Y.XmlText(randomString(r)) : new Y.XmlHook('hook')
      // The typings omit XmlHook, but Yjs inserts any shared type (it yields typeRef 5 on the wire).
      x.insert(int(r, x.length + 1), [node as Y.XmlElement | Y.XmlText])
      if (node instanceof Y.XmlElement) node.setAttribute('class', randomString(r))
      return
    }
    case 13:
      m.set('arr', Y.Array.from([int(r, 9), randomString(r)]))
      return
    default:
      if (r() < 0.3) m.set('sub', new Y.Doc({ guid: `sub-${int(r, 1000)}` }))
      else if (x.length > 0) x.delete(int(r, x.length), 1)
  }
}

interface Workload {
  docs: Y.Doc[]
  updates: Uint8Array[]
}

/** Several clients editing, syncing (sometimes out of order) and emitting every kind of V1 update. */
function runWorkload(seed: number, steps: number): Workload {
  const r = prng(seed)
  const docs: Y.Doc[] = []
  const updates: Uint8Array[] = []
  const used = new Set<number>()
  for (let i = 2 + int(r, 2); i > 0; i--) {
    const doc = new Y.Doc({ gc: r() < 0.5 })
    let id = 0
    while (id === 0 || used.has(id)) id = r() < 0.3 ? 1 + int(r, 300) : 1 + int(r, 2 ** 32 - 1)
    used.add(id)
    doc.clientID = id
    doc.on('update', (u: Uint8Array) => updates.push(u))
    docs.push(doc)
  }
  const svs: Uint8Array[] = [Y.encodeStateVector(new Map())]
  for (let s = 0; s < steps; s++) {
    const doc = pick(r, docs)
    const roll = r()
    if (roll < 0.55) mutate(r, doc)
    else if (roll < 0.7) doc.transact(() => Array.from({ length: 2 + int(r, 4) }, () => mutate(r, doc)))
    else if (roll < 0.85) {
      const src = pick(r, docs)
      if (src !== doc) Y.applyUpdate(doc, Y.encodeStateAsUpdate(src, Y.encodeStateVector(doc)))
    } else if (roll < 0.93) {
      // Out-of-order delivery leaves pending structs; full states then re-emit them (with Skips).
      if (updates.length > 0) Y.applyUpdate(doc, pick(r, updates))
    } else svs.push(Y.encodeStateVector(doc))
  }
  const produced = updates.length
  for (const doc of docs) {
    updates.push(Y.encodeStateAsUpdate(doc))
    updates.push(Y.encodeStateAsUpdate(doc, pick(r, svs)))
  }
  for (let i = 0; i < 3 && produced > 0; i++) {
    const subset = Array.from({ length: 1 + int(r, 6) }, () => updates[int(r, produced)]!)
    const merged = Y.mergeUpdates(subset)
    updates.push(merged, Y.diffUpdate(merged, pick(r, svs)))
  }
  return { docs, updates }
}

const fuzzUpdates: Uint8Array[] = []
for (let seed = 1; fuzzUpdates.length < 2000; seed++) fuzzUpdates.push(...runWorkload(seed, 40).updates)

/** What Y.decodeUpdate sees, in a shape comparable with parseUpdate's output. */
function yjsView(u: Uint8Array) {
  const { structs, ds } = Y.decodeUpdate(u)
  const id = (x: Y.ID | null) => (x ? { client: x.client, clock: x.clock } : undefined)
  return {
    structs: structs.map((s) => {
      const base = { client: s.id.client, clock: s.id.clock, len: s.length }
      if (s instanceof Y.Skip) return { ...base, kind: 'skip' }
      if (s instanceof Y.GC) return { ...base, kind: 'gc' }
      const item = s as Y.Item
      const parent = item.parent as unknown
      return {
        ...base,
        kind: 'item',
        ref: item.content.getRef(),
        origin: id(item.origin),
        rightOrigin: id(item.rightOrigin),
        parentRoot: typeof parent === 'string' ? parent : undefined,
        parentId: parent instanceof Y.ID ? id(parent) : undefined,
        key: item.parentSub ?? undefined,
        binary: item.content instanceof Y.ContentBinary ? Array.from(item.content.content) : undefined,
      }
    }),
    ds: [...ds.clients.entries()].map(([client, items]) => ({ client, ranges: items.map((d) => [d.clock, d.len]) })),
  }
}

function ourView(p: ParsedUpdate) {
  return {
    structs: p.groups.flatMap((g) =>
      g.structs.map((s) => {
        const base = { client: g.client, clock: s.clock, len: s.len }
        if (s.kind !== 'item') return { ...base, kind: s.kind }
        return {
          ...base,
          kind: 'item',
          ref: s.contentRef,
          origin: s.origin,
          rightOrigin: s.rightOrigin,
          parentRoot: s.parentRoot,
          parentId: s.parentId,
          key: s.key,
          binary: s.binary ? Array.from(s.binary) : undefined,
        }
      }),
    ),
    ds: p.deleteSet,
  }
}

/** Everything a user can observe of a doc, plus its state vector and delete set. */
function observable(doc: Y.Doc) {
  const content = {
    m: doc.getMap('m').toJSON(),
    a: doc.getArray('a').toJSON(),
    t: doc.getText('t').toDelta(),
    x: doc.getXmlFragment('x').toString(),
  }
  // Key order of a Y.Map follows local integration order, which is not part of its meaning.
  const canonical = (_k: string, v: unknown) => {
    if (typeof v === 'bigint') return `${v}n`
    if (v instanceof Uint8Array) return `bin:${toHex(v)}`
    if (v && typeof v === 'object' && !Array.isArray(v)) return Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1)))
    return v
  }
  return {
    content: JSON.stringify(content, canonical),
    sv: toHex(Y.encodeStateVector(doc)),
    snapshot: toHex(Y.encodeSnapshot(Y.snapshot(doc))),
  }
}

function applyAll(updates: Uint8Array[], gc: boolean): Y.Doc {
  const doc = new Y.Doc({ gc })
  for (const u of updates) Y.applyUpdate(doc, u)
  return doc
}

// ---------- tests ----------

describe('yjs v1 parser', () => {
  describe('annotated dumps from the format notes', () => {
    const A = '01 01 01 00 23 01 03 6c 6f 67 02 65 31 03 01 02 03 00'
    const B = '01 02 01 00 | 23 01 03 6c6f67 02 6531 03 010203 | 23 01 03 6c6f67 02 6532 02 0405 | 00'
    const C = '00 | 01 01 01 00 01'
    const D = '01 01 01 02 | a3 01 01 01 08 | 01 01 01 01 01'
    const E = '01 03 01 00 | 21 01 03 6c6f67 02 6531 01 | 21 01 03 6c6f67 02 6532 01 | a3 01 01 01 08 | 01 01 01 00 02'
    const F = '01 02 01 01 | 21 01 03 6c6f67 02 6532 01 | a3 01 01 01 08 | 01 01 01 00 02'
    const F2 = '01 01 01 01 88 01 00 02 7d 02 7d 03 00'
    const G = '02 | 01 c8 01 00 23 01 03 6c6f67 02 6532 01 04 | 01 01 00 23 01 03 6c6f67 02 6531 03 010203 | 00'

    it('(a) one map set with a binary value is one item with root parent, key and binary content', () => {
      const p = parseUpdate(hex(A))
      expect(p.byteLength).toBe(18)
      expect(p.deleteSet).toEqual([])
      expect(p.deleteSetStart).toBe(17)
      expect(p.groups).toHaveLength(1)
      const g = p.groups[0]!
      expect(g).toMatchObject({ client: 1, startClock: 0, headerStart: 1 })
      const s = g.structs[0]!
      expect(s).toMatchObject({ kind: 'item', start: 4, end: 17, clock: 0, len: 1, info: 0x23, contentRef: 3 })
      expect(s).toMatchObject({ parentRoot: 'log', key: 'e1', contentStart: 13, contentEnd: 17 })
      expect(s.origin).toBeUndefined()
      expect(s.rightOrigin).toBeUndefined()
      expect(s.parentId).toBeUndefined()
      expect(Array.from(s.binary!)).toEqual([1, 2, 3])
    })

    it('(b) two sets in one transaction are one group whose second struct has the next clock', () => {
      const p = parseUpdate(hex(B))
      expect(p.byteLength).toBe(30)
      const [s1, s2] = p.groups[0]!.structs
      expect(s1).toMatchObject({ clock: 0, len: 1, key: 'e1', parentRoot: 'log' })
      expect(s2).toMatchObject({ clock: 1, len: 1, key: 'e2', parentRoot: 'log', start: 17, end: 29 })
      expect(Array.from(s2!.binary!)).toEqual([4, 5])
    })

    it('(c) a map delete is an update with no groups and one delete range', () => {
      const p = parseUpdate(hex(C))
      expect(p.groups).toEqual([])
      expect(p.deleteSet).toEqual([{ client: 1, ranges: [[0, 1]] }])
      expect(isEmptyUpdate(p)).toBe(false)
    })

    it('(d) an overwrite carries an origin and no parent or key even though 0x20 is set', () => {
      const p = parseUpdate(hex(D))
      const s = p.groups[0]!.structs[0]!
      expect(p.groups[0]!.startClock).toBe(2)
      expect(s).toMatchObject({ clock: 2, len: 1, info: 0xa3, contentRef: 3, origin: { client: 1, clock: 1 } })
      expect(s.key).toBeUndefined()
      expect(s.parentRoot).toBeUndefined()
      expect(Array.from(s.binary!)).toEqual([8])
      expect(p.deleteSet).toEqual([{ client: 1, ranges: [[1, 1]] }])
    })

    it('(e) a gc full state has ContentDeleted items that keep parent and key, and one merged range', () => {
      const p = parseUpdate(hex(E))
      expect(p.byteLength).toBe(34)
      const [s0, s1, s2] = p.groups[0]!.structs
      expect(s0).toMatchObject({ clock: 0, len: 1, info: 0x21, contentRef: 1, key: 'e1', parentRoot: 'log' })
      expect(s1).toMatchObject({ clock: 1, len: 1, info: 0x21, contentRef: 1, key: 'e2' })
      expect(s2).toMatchObject({ clock: 2, len: 1, info: 0xa3, origin: { client: 1, clock: 1 } })
      expect(p.deleteSet).toEqual([{ client: 1, ranges: [[0, 2]] }])
    })

    it('(f) a diff starts at the state-vector clock and carries the whole delete set', () => {
      const p = parseUpdate(hex(F))
      expect(p.byteLength).toBe(24)
      expect(p.groups[0]).toMatchObject({ client: 1, startClock: 1 })
      expect(p.groups[0]!.structs.map((s) => [s.clock, s.len])).toEqual([
        [1, 1],
        [2, 1],
      ])
      expect(p.deleteSet).toEqual([{ client: 1, ranges: [[0, 2]] }])
    })

    it('(f) a diff starting inside a multi-clock ContentAny is trimmed and given the origin start-1', () => {
      const s = parseUpdate(hex(F2)).groups[0]!.structs[0]!
      expect(s).toMatchObject({ clock: 1, len: 2, info: 0x88, contentRef: 8, origin: { client: 1, clock: 0 } })
    })

    it('(g) groups of two clients come in descending client order', () => {
      const p = parseUpdate(hex(G))
      expect(p.byteLength).toBe(33)
      expect(p.groups.map((g) => g.client)).toEqual([200, 1])
      expect(p.groups[0]!.structs[0]).toMatchObject({ key: 'e2', clock: 0 })
      expect(p.groups[1]!.structs[0]).toMatchObject({ key: 'e1', clock: 0 })
      expect(parseStateVector(hex('02 c8 01 01 01 01'))).toEqual(
        new Map([
          [200, 1],
          [1, 1],
        ]),
      )
      expect(toHex(encodeStateVector(new Map([[1, 1], [200, 1]])))).toBe('02 c8 01 01 01 01')
    })

    it('the empty update 00 00 parses as empty and a lone 00 or no bytes are rejected', () => {
      expect(isEmptyUpdate(parseUpdate(hex('00 00')))).toBe(true)
      expectMalformed(hex('00'))
      expectMalformed(new Uint8Array())
    })

    it('the dumps are byte-for-byte what the installed yjs writes', () => {
      const doc = new Y.Doc()
      doc.clientID = 1
      const out: string[] = []
      doc.on('update', (u: Uint8Array) => out.push(toHex(u)))
      const log = doc.getMap('log')
      log.set('e1', Uint8Array.of(1, 2, 3))
      const svA = Y.encodeStateVector(doc)
      log.delete('e1')
      log.set('e2', Uint8Array.of(9))
      log.set('e2', Uint8Array.of(8))
      expect(out[0]).toBe(toHex(hex(A)))
      expect(out[1]).toBe(toHex(hex(C)))
      expect(out[3]).toBe(toHex(hex(D)))
      expect(toHex(Y.encodeStateAsUpdate(doc))).toBe(toHex(hex(E)))
      expect(toHex(Y.encodeStateAsUpdate(doc, svA))).toBe(toHex(hex(F)))

      const tx = new Y.Doc()
      tx.clientID = 1
      tx.on('update', (u: Uint8Array) => out.push(toHex(u)))
      tx.transact(() => {
        tx.getMap('log').set('e1', Uint8Array.of(1, 2, 3))
        tx.getMap('log').set('e2', Uint8Array.of(4, 5))
      })
      expect(out.at(-1)).toBe(toHex(hex(B)))

      const arr = new Y.Doc()
      arr.clientID = 1
      arr.getArray('a').push([1, 2, 3])
      expect(toHex(Y.encodeStateAsUpdate(arr, Y.encodeStateVector(new Map([[1, 1]]))))).toBe(toHex(hex(F2)))

      const d200 = new Y.Doc()
      d200.clientID = 200
      d200.getMap('log').set('e2', Uint8Array.of(4))
      const d1 = new Y.Doc()
      d1.clientID = 1
      d1.getMap('log').set('e1', Uint8Array.of(1, 2, 3))
      Y.applyUpdate(d1, Y.encodeStateAsUpdate(d200))
      expect(toHex(Y.encodeStateAsUpdate(d1))).toBe(toHex(hex(G)))
      expect(toHex(Y.encodeStateVector(d1))).toBe('02 c8 01 01 01 01')
    })
  })

  describe('agreement with Y.decodeUpdate on real workloads', () => {
    it(`parses ${fuzzUpdates.length} updates from random multi-client workloads exactly as Y.decodeUpdate reads them`, () => {
      expect(fuzzUpdates.length).toBeGreaterThanOrEqual(2000)
      const refs = new Set<number>()
      let skips = 0
      for (const u of fuzzUpdates) {
        const p = parseUpdate(u)
        expect(ourView(p)).toEqual(yjsView(u))
        for (const g of p.groups) for (const s of g.structs) refs.add(s.contentRef)
        skips += p.groups.reduce((n, g) => n + g.structs.filter((s) => s.kind === 'skip').length, 0)
      }
      // The workloads must actually exercise every content kind Yjs 13.6 writes, and Skips.
      expect([...refs].sort((a, b) => a - b)).toEqual([0, 1, 3, 4, 5, 6, 7, 8, 9, 10])
      expect(skips).toBeGreaterThan(0)
    })

    it('reads a legacy ContentJSON item (ref 2) like Yjs, including the literal undefined', () => {
      const u = oneGroup(5, 0, [[0x02, 1, ...varStr('r'), 3, ...varStr('{"a":[1,2]}'), ...varStr('undefined'), ...varStr('"s"')]])
      const p = parseUpdate(u)
      expect(p.groups[0]!.structs[0]).toMatchObject({ contentRef: 2, len: 3, parentRoot: 'r' })
      expect(ourView(p)).toEqual(yjsView(u))
    })

    it('counts ContentString clocks in UTF-16 code units and keeps a leading BOM like lib0', () => {
      const u = oneGroup(5, 0, [[0x04, 1, ...varStr('t'), ...varStr('a😀')], [0x84, 5, 2, ...varStr('\uFEFFb')]])
      const p = parseUpdate(u)
      expect(p.groups[0]!.structs.map((s) => s.len)).toEqual([3, 2])
      expect(ourView(p)).toEqual(yjsView(u))
    })

    it('reads XML element and hook type names (typeRef 3 and 5)', () => {
      const u = oneGroup(5, 0, [
        [0x07, 1, ...varStr('x'), 3, ...varStr('p')],
        [0x87, 5, 0, 5, ...varStr('hook')],
        [0x87, 5, 1, 6],
      ])
      expect(ourView(parseUpdate(u))).toEqual(yjsView(u))
    })
  })

  describe('strictness (pitfalls of the format notes, section 6)', () => {
    const binItem = [0x23, 1, ...varStr('log'), ...varStr('e1'), 3, 1, 2, 3]

    it('rejects overlong, over-long and out-of-range varUints that lib0 would accept', () => {
      expectMalformed(Uint8Array.from([1, 1, 0x81, 0x00, 0, ...binItem, 0])) // client 1 written overlong
      expectMalformed(Uint8Array.from([1, 1, ...Array(8).fill(0xff), 0x01, 0, ...binItem, 0])) // 9 bytes
      expectMalformed(Uint8Array.from([1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x10, 0, ...binItem, 0])) // 2^53
      expectMalformed(Uint8Array.from([...Array(200).fill(0x80), 0x00, 0])) // lib0 returns NaN here
      const max = parseUpdate(Uint8Array.from([1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, ...binItem, 0]))
      expect(max.groups[0]!.client).toBe(Number.MAX_SAFE_INTEGER)
    })

    it('rejects tiny updates that claim huge clock ranges unless maxClockLen allows them', () => {
      const gcHuge = oneGroup(1, 0, [[0x00, ...varUint(2 ** 40)]])
      const deletedHuge = oneGroup(1, 0, [[0x01, 1, ...varStr('m'), ...varUint(2 ** 40)]])
      expect(gcHuge.length).toBe(12)
      expectMalformed(gcHuge)
      expectMalformed(deletedHuge)
      expectMalformed(oneGroup(1, 2 ** 32 - 1, [[0x00, 2]])) // clock + len just past 2^32
      expect(parseUpdate(oneGroup(1, 2 ** 32 - 1, [[0x00, 1]])).groups[0]!.structs[0]!.len).toBe(1)
      expect(outcome(() => parseUpdate(gcHuge, { maxClockLen: 2 ** 41 }))).toBe('ok')
      expectMalformed(Uint8Array.from([0, 1, 1, 1, ...varUint(2 ** 40), 1])) // delete range past the limit
      expectMalformed(oneGroup(1, 0, [[0x88, 1, ...varUint(2 ** 40), 1, 0x7e]])) // origin clock past the limit
    })

    it('rejects zero-length structs, empty groups and zero-length delete ranges', () => {
      expectMalformed(oneGroup(1, 0, [[0x00, 0]]))
      expectMalformed(oneGroup(1, 0, [[0x0a, 0]]))
      expectMalformed(oneGroup(1, 0, [[0x04, 1, ...varStr('t'), 0]])) // ContentString ""
      expectMalformed(oneGroup(1, 0, [[0x08, 1, ...varStr('a'), 0]])) // ContentAny with no values
      expectMalformed(oneGroup(1, 0, [[0x01, 1, ...varStr('a'), 0]])) // ContentDeleted len 0
      expectMalformed(oneGroup(1, 0, [[0x02, 1, ...varStr('a'), 0]])) // ContentJSON with no entries
      expectMalformed(hex('01 00 01 00 00'))
      expectMalformed(hex('00 01 01 01 00 00'))
      expectMalformed(hex('00 01 01 00')) // a delete-set client with no ranges
    })

    it('rejects a client that appears twice in struct groups or in the delete set', () => {
      const g = (clock: number) => [1, 1, clock, 0x00, 1]
      expectMalformed(Uint8Array.from([2, ...g(0), ...g(1), 0]))
      expectMalformed(Uint8Array.from([2, ...g(1), ...g(0), 0]))
      expectMalformed(hex('00 02 01 01 00 01 01 01 05 01'))
    })

    it('requires descending client order for groups and delete set', () => {
      const g = (client: number) => [1, client, 0, 0x00, 1]
      expect(outcome(() => parseUpdate(Uint8Array.from([2, ...g(2), ...g(1), 0])))).toBe('ok')
      expectMalformed(Uint8Array.from([2, ...g(1), ...g(2), 0]))
      expect(outcome(() => parseUpdate(hex('00 02 02 01 00 01 01 01 00 01')))).toBe('ok')
      expectMalformed(hex('00 02 01 01 00 01 02 01 00 01'))
    })

    it('requires delete ranges sorted and non-overlapping but accepts adjacent ones', () => {
      expect(parseUpdate(hex('00 01 01 02 00 02 02 01')).deleteSet[0]!.ranges).toEqual([
        [0, 2],
        [2, 1],
      ])
      expectMalformed(hex('00 01 01 02 05 01 00 01')) // unsorted
      expectMalformed(hex('00 01 01 02 00 03 02 01')) // overlapping
    })

    it('accepts GC only as 00 and Skip only as 0a, and rejects unknown content refs', () => {
      expect(parseUpdate(oneGroup(1, 0, [[0x0a, 1], [0x00, 1]])).groups[0]!.structs.map((s) => s.kind)).toEqual(['skip', 'gc'])
      expectMalformed(oneGroup(1, 0, [[0x80, 1]]))
      expectMalformed(oneGroup(1, 0, [[0x8a, 1]]))
      expectMalformed(oneGroup(1, 0, [[0x20, 1]]))
      for (let ref = 11; ref < 32; ref++) expectMalformed(oneGroup(1, 0, [[ref, 1, ...varStr('a'), 1]]))
    })

    it('requires parentInfo 0 or 1 and reads a parent ID for 0', () => {
      const p = parseUpdate(oneGroup(1, 1, [[0x21, 0, 9, 0, ...varStr('k'), 1]]))
      expect(p.groups[0]!.structs[0]).toMatchObject({ parentId: { client: 9, clock: 0 }, key: 'k' })
      expectMalformed(oneGroup(1, 0, [[0x21, 2, 9, 0, ...varStr('k'), 1]]))
    })

    it('reads no parent or key when an origin or rightOrigin bit is set', () => {
      const s = parseUpdate(oneGroup(1, 3, [[0x64, 2, 7, ...varStr('xy')]])).groups[0]!.structs[0]!
      expect(s).toMatchObject({ rightOrigin: { client: 2, clock: 7 }, len: 2 })
      expect(s.key).toBeUndefined()
    })

    it('requires the delete set and rejects bytes after it', () => {
      expectMalformed(Uint8Array.from([1, 1, 1, 0, ...binItem]))
      expectMalformed(Uint8Array.from([1, 1, 1, 0, ...binItem, 0, 0]))
      expectMalformed(hex('00 00 00'))
    })

    it('rejects counts that cannot fit in the remaining bytes without allocating for them', () => {
      const huge = Uint8Array.from([1, ...varUint(2 ** 31), 1, 0, ...binItem, 0])
      const t0 = performance.now()
      expectMalformed(huge)
      expectMalformed(Uint8Array.from([...varUint(2 ** 40), 0]))
      expectMalformed(Uint8Array.from([0, ...varUint(2 ** 50)]))
      expectMalformed(oneGroup(1, 0, [[0x08, 1, ...varStr('a'), ...varUint(2 ** 31), 0x7e]]))
      expect(performance.now() - t0).toBeLessThan(50)
    })

    it('validates ContentType typeRefs, subdocument options, Any tags and Any nesting', () => {
      expectMalformed(oneGroup(1, 0, [[0x07, 1, ...varStr('a'), 7]]))
      expect(outcome(() => parseUpdate(oneGroup(1, 0, [[0x09, 1, ...varStr('a'), ...varStr('guid'), 0x76, 0]])))).toBe('ok')
      expectMalformed(oneGroup(1, 0, [[0x09, 1, ...varStr('a'), ...varStr('guid'), 0x7e]]))
      expectMalformed(oneGroup(1, 0, [[0x08, 1, ...varStr('a'), 1, 0x73]]))
      const nested = (depth: number) => [...Array(depth).fill([0x75, 1]).flat(), 0x7e]
      expect(outcome(() => parseUpdate(oneGroup(1, 0, [[0x08, 1, ...varStr('a'), 1, ...nested(32)]])))).toBe('ok')
      expectMalformed(oneGroup(1, 0, [[0x08, 1, ...varStr('a'), 1, ...nested(33)]]))
      expect(outcome(() => parseUpdate(oneGroup(1, 0, [[0x08, 1, ...varStr('a'), 1, ...nested(33)]]), { maxNesting: 40 }))).toBe('ok')
    })

    it('rejects invalid UTF-8 and invalid JSON text', () => {
      expectMalformed(oneGroup(1, 0, [[0x04, 1, ...varStr('t'), ...varStr(Uint8Array.of(0xc3))]]))
      expectMalformed(oneGroup(1, 0, [[0x23, 1, ...varStr('m'), ...varStr(Uint8Array.of(0xed, 0xa0, 0x80)), 0]])) // surrogate
      expectMalformed(oneGroup(1, 0, [[0x05, 1, ...varStr('t'), ...varStr('{image:1}')]]))
      expectMalformed(oneGroup(1, 0, [[0x06, 1, ...varStr('t'), ...varStr('bold'), ...varStr('undefined')]]))
      expectMalformed(oneGroup(1, 0, [[0x02, 1, ...varStr('t'), 1, ...varStr('[1,')]]))
    })

    it('enforces key and root-name byte limits', () => {
      expect(outcome(() => parseUpdate(oneGroup(1, 0, [[0x21, 1, ...varStr('r'.repeat(64)), ...varStr('k'.repeat(256)), 1]])))).toBe('ok')
      expectMalformed(oneGroup(1, 0, [[0x21, 1, ...varStr('r'.repeat(65)), ...varStr('k'), 1]]))
      expectMalformed(oneGroup(1, 0, [[0x21, 1, ...varStr('r'), ...varStr('k'.repeat(257)), 1]]))
    })

    it('reports size and count limits as too_large', () => {
      const u = oneGroup(1, 0, [[0x00, 1], [0x00, 1], [0x00, 1]], [1, 1, 2, 0, 1, 5, 1])
      expect(outcome(() => parseUpdate(u))).toBe('ok')
      expect(outcome(() => parseUpdate(u, { maxBytes: u.length - 1 }))).toBe(ErrorCode.TooLarge)
      expect(outcome(() => parseUpdate(u, { maxStructs: 2 }))).toBe(ErrorCode.TooLarge)
      expect(outcome(() => parseUpdate(u, { maxDeleteRanges: 1 }))).toBe(ErrorCode.TooLarge)
      expect(outcome(() => parseUpdate(u, { maxStructs: -1 }))).toBe(ErrorCode.InvalidArgument)
    })

    it('rejects every strict prefix of real updates', () => {
      const r = prng(99)
      for (let i = 0; i < 60; i++) {
        const u = pick(r, fuzzUpdates)
        for (let len = 0; len < u.length; len++) expectMalformed(u.subarray(0, len))
      }
    })

    it('never throws anything but PetrelError on flipped bytes, and whatever it accepts Yjs reads the same way', () => {
      const r = prng(7)
      let accepted = 0
      for (let i = 0; i < 3000; i++) {
        const u = pick(r, fuzzUpdates).slice()
        for (let f = 1 + int(r, 3); f > 0; f--) u[int(r, u.length)] = r() < 0.5 ? int(r, 256) : u[int(r, u.length)]! ^ (1 << int(r, 8))
        let p: ParsedUpdate | undefined
        expect(['ok', ErrorCode.Malformed]).toContain(
          outcome(() => {
            p = parseUpdate(u)
          }),
        )
        if (p) {
          accepted++
          expect(ourView(p)).toEqual(yjsView(u))
        }
      }
      expect(accepted).toBeGreaterThan(0)
    })
  })

  describe('hostile vectors', () => {
    const file = new URL('../../../shared/vectors/yjs-hostile-updates.json', import.meta.url)
    // Deliberately no existsSync/skip: a missing vector file must fail this suite.
    const vectors = (JSON.parse(readFileSync(file, 'utf8')) as { vectors: Array<{ name: string; hex?: string; bytes?: number[] }> })
      .vectors

    it('the vector file is present and not empty', () => {
      expect(vectors.length).toBeGreaterThan(0)
    })

    it.each(vectors.map((v) => [v.name, v] as const))('%s is rejected as malformed or parsed within 50 ms', (_name, v) => {
      const bytes = v.hex !== undefined ? hex(v.hex) : Uint8Array.from(v.bytes ?? [])
      expect(bytes.length).toBeGreaterThan(0)
      const t0 = performance.now()
      const result = outcome(() => parseUpdate(bytes))
      expect(performance.now() - t0).toBeLessThan(50)
      expect(['ok', ErrorCode.Malformed]).toContain(result)
    })

    it('handles megabyte-sized adversarial inputs in linear time', () => {
      const n = 1024 * 1024 - 64
      const cat = (...parts: ArrayLike<number>[]) => {
        const out = new Uint8Array(parts.reduce((len, part) => len + part.length, 0))
        let off = 0
        for (const part of parts) {
          out.set(part, off)
          off += part.length
        }
        return out
      }
      const pattern = (count: number, unit: number[]) => new Uint8Array(count * unit.length).map((_, i) => unit[i % unit.length]!)
      const anyItem = [1, 1, 1, 0, 0x08, 1, ...varStr('a'), 1]
      const inputs: Record<string, Uint8Array> = {
        continuationBytes: new Uint8Array(n).fill(0x80),
        ffBytes: new Uint8Array(n).fill(0xff),
        zeros: new Uint8Array(n),
        maxStructsOfGc: cat([1, ...varUint(100_000), 1, 0], pattern(100_000, [0, 1]), [0]),
        millionNulls: cat([...anyItem, 0x75, ...varUint(n - 20)], new Uint8Array(n - 20).fill(0x7e), [0]),
        halfMillionEmptyStrings: cat([...anyItem, 0x75, ...varUint(n / 2)], pattern(n / 2, [0x77, 0]), [0]),
        thirdMillionObjectKeys: cat([...anyItem, 0x76, ...varUint(300_000)], pattern(300_000, [1, 0x61, 0x7e]), [0]),
        halfMillionJsonTexts: cat([1, 1, 1, 0, 0x02, 1, ...varStr('j'), ...varUint(500_000)], pattern(500_000, [1, 0x30]), [0]),
        jsonNesting: cat([1, 1, 1, 0, 0x05, 1, ...varStr('t'), ...varUint(n - 20)], new Uint8Array(n - 20).fill(0x5b), [0]),
      }
      for (const [name, input] of Object.entries(inputs)) {
        const t0 = performance.now()
        const result = outcome(() => parseUpdate(input))
        const ms = performance.now() - t0
        expect(['ok', ErrorCode.Malformed], name).toContain(result)
        // Warm runs take 1–60 ms; the margin is for cold JIT on a loaded two-core machine.
        expect(ms, name).toBeLessThan(500)
      }
      expect(outcome(() => parseUpdate(inputs.maxStructsOfGc!))).toBe('ok')
      expect(outcome(() => parseUpdate(inputs.halfMillionJsonTexts!))).toBe('ok')
    })
  })

  describe('splitUpdate', () => {
    const r = prng(2024)
    const cases = Array.from({ length: 12 }, (_, i) => {
      const w = runWorkload(500 + i, 80)
      return { gc: r() < 0.5, updates: [Y.encodeStateAsUpdate(pick(r, w.docs)), Y.mergeUpdates(w.updates)] }
    })

    it.each([64, 200, 1000])('splits random documents into pieces of at most %i bytes that rebuild the same doc', (maxBytes) => {
      let pieceCount = 0
      let oversized = 0
      for (const { gc, updates } of cases) {
        for (const u of updates) {
          const pieces = splitUpdate(u, maxBytes)
          pieceCount += pieces.length
          for (const piece of pieces) {
            const p = parseUpdate(piece)
            const structs = p.groups.reduce((n, g) => n + g.structs.length, 0)
            const ranges = p.deleteSet.reduce((n, d) => n + d.ranges.length, 0)
            if (piece.length > maxBytes) {
              oversized++
              expect(structs + ranges).toBe(1)
            }
          }
          expect(observable(applyAll(pieces, gc))).toEqual(observable(applyAll([u], gc)))
        }
      }
      expect(pieceCount).toBeGreaterThan(cases.length * 2)
      if (maxBytes === 64) expect(oversized).toBeGreaterThan(0)
    })

    it('returns an update that already fits as a single copy', () => {
      const u = hex('01 01 01 00 23 01 03 6c 6f 67 02 65 31 03 01 02 03 00')
      const pieces = splitUpdate(u, 18)
      expect(pieces).toHaveLength(1)
      expect(pieces[0]).toEqual(u)
      expect(pieces[0]).not.toBe(u)
      expect(splitUpdate(hex('00 00'), 1)).toEqual([hex('00 00')])
    })

    it('restates the start clock of each piece and puts the delete set last', () => {
      const u = oneGroup(300, 10, [[0x00, 5], [0x0a, 2], [0x00, 3]], [1, 1, 1, 0, 4])
      const pieces = splitUpdate(u, 9).map((b) => parseUpdate(b))
      expect(pieces.map((p) => p.groups.map((g) => [g.client, g.startClock, g.structs.length]))).toEqual([
        [[300, 10, 1]],
        [[300, 15, 1]],
        [[300, 17, 1]],
        [],
      ])
      expect(pieces.map((p) => p.deleteSet.length)).toEqual([0, 0, 0, 1])
    })

    it('splits a large delete set into delete-only pieces', () => {
      const doc = new Y.Doc()
      doc.clientID = 42
      const a = doc.getArray<number>('a')
      a.push(Array.from({ length: 400 }, (_, i) => i))
      for (let i = 199; i >= 0; i--) a.delete(i * 2, 1)
      const u = Y.encodeStateAsUpdate(doc)
      expect(parseUpdate(u).deleteSet[0]!.ranges).toHaveLength(200)
      const pieces = splitUpdate(u, 64)
      expect(pieces.every((b) => b.length <= 64)).toBe(true)
      expect(pieces.filter((b) => parseUpdate(b).groups.length === 0).length).toBeGreaterThan(1)
      expect(observable(applyAll(pieces, true))).toEqual(observable(applyAll([u], true)))
    })

    it('rejects a malformed input or a bad maxBytes with a PetrelError', () => {
      expect(outcome(() => splitUpdate(hex('00'), 10))).toBe(ErrorCode.Malformed)
      expect(outcome(() => splitUpdate(hex('00 00'), 0))).toBe(ErrorCode.InvalidArgument)
    })
  })

  describe('state vectors and update building', () => {
    it('round-trips state vectors with Yjs and rejects duplicates, trailing bytes and truncation', () => {
      const sv = new Map([
        [5, 10],
        [2 ** 32 - 1, 1],
        [0, 2 ** 40],
      ])
      const bytes = encodeStateVector(sv)
      expect(toHex(bytes)).toBe(toHex(Y.encodeStateVector(sv)))
      expect(parseStateVector(bytes)).toEqual(sv)
      expect(parseStateVector(hex('02 01 01 05 02'))).toEqual(
        new Map([
          [1, 1],
          [5, 2],
        ]),
      )
      expect(outcome(() => parseStateVector(hex('02 01 01 01 02')))).toBe(ErrorCode.Malformed)
      expect(outcome(() => parseStateVector(hex('01 01 01 00')))).toBe(ErrorCode.Malformed)
      expect(outcome(() => parseStateVector(hex('02 01 01')))).toBe(ErrorCode.Malformed)
      expect(outcome(() => parseStateVector(hex('02 01 01 02 02'), 1))).toBe(ErrorCode.TooLarge)
      expect(outcome(() => encodeStateVector(new Map([[-1, 0]])))).toBe(ErrorCode.InvalidArgument)
    })

    it('builds updates from struct runs that parse back to the same structs', () => {
      const src = hex('02 | 01 c8 01 00 23 01 03 6c6f67 02 6532 01 04 | 01 01 00 23 01 03 6c6f67 02 6531 03 010203 | 00')
      const p = parseUpdate(src)
      const runs = p.groups.map((g) => ({
        client: g.client,
        startClock: g.startClock,
        count: g.structs.length,
        bytes: src.subarray(g.structs[0]!.start, g.structs.at(-1)!.end),
      }))
      expect(buildUpdate(runs)).toEqual(src)
      expect(parseUpdate(buildUpdate(runs.slice(1), [{ client: 1, ranges: [[0, 1]] }])).deleteSet).toEqual([{ client: 1, ranges: [[0, 1]] }])
      expect(outcome(() => buildUpdate([...runs].reverse()))).toBe(ErrorCode.InvalidArgument)
    })
  })

  describe('JSON text checker', () => {
    it('accepts exactly what JSON.parse accepts on random short texts', () => {
      const r = prng(3)
      const alphabet = ['{', '}', '[', ']', '"', ':', ',', ' ', '0', '1', '-', '.', 'e', '+', 'true', 'null', 'fals', '\\', 'u', 'a', '\n']
      let valid = 0
      for (let i = 0; i < 20_000; i++) {
        const text = Array.from({ length: 1 + int(r, 8) }, () => pick(r, alphabet)).join('')
        let expected = true
        try {
          JSON.parse(text)
        } catch {
          expected = false
        }
        if (expected) valid++
        expect([text, outcome(() => checkJson(text, 32, 'test')) === 'ok']).toEqual([text, expected])
      }
      expect(valid).toBeGreaterThan(100)
    })
  })
})
