/**
 * The RelayStore contract as executable spec, run against every backend by
 * relay-store.test.ts. Backend-specific behaviour (migrations, several nodes) is tested there.
 * Compaction, the membership index and the link mailbox are in relay-store-upkeep.conformance.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { ReceiptRow, RelayStore } from '../../src/relay/store/relay-store.js'
import { expectPetrelError } from './device-store.conformance.js'
import { batch, row, text } from './relay-store-rows.js'
import { describeRelayStoreUpkeep } from './relay-store-upkeep.conformance.js'

export interface RelayStoreHarness {
  store: RelayStore
  /** Opens the same storage again (another store object, as a restarted relay would). */
  reopen: () => Promise<RelayStore>
  /** Closes every store the harness opened and removes the storage. */
  cleanup: () => Promise<void>
  /**
   * Sets a room's last handed-out seq behind its rows, as a numbering fault would, by
   * writing the storage directly; tests needing it are skipped for backends without it.
   */
  rewindSeq?: (room: string, lastSeq: number) => Promise<void>
}

const bytes = (...xs: number[]): Uint8Array => new Uint8Array(xs)
const asText = (b: Uint8Array): string => new TextDecoder().decode(b)



const receipt = (room: string, device: string, stored: number, read: number, storedAt: number, readAt: number): ReceiptRow => ({
  room,
  device,
  stored,
  read,
  storedAt,
  readAt,
})

const GENESIS = text('genesis')

/**
 * Registers the RelayStore conformance tests for one backend. `open` makes fresh, isolated
 * storage per test.
 *
 * @example
 * ```ts
 * runRelayStoreConformance('SQLite', async () => {
 *   const file = join(await mkdtemp(join(tmpdir(), 'petrel-')), 'relay.db')
 *   const store = openSqliteRelayStore(file)
 *   return { store, reopen: async () => openSqliteRelayStore(file), cleanup: () => store.close() }
 * })
 * ```
 */
export function runRelayStoreConformance(name: string, open: () => Promise<RelayStoreHarness>): void {
  describe(name, () => {
    let harness: RelayStoreHarness
    let store: RelayStore

    beforeEach(async () => {
      harness = await open()
      store = harness.store
    })
    afterEach(async () => {
      await harness.cleanup()
    })

    describe('rooms', () => {
      it('loads undefined for a room never created', async () => {
        expect(await store.loadRoom('nowhere')).toBeUndefined()
      })

      it('loads a new room as its genesis record and nothing else', async () => {
        await store.createRoom('A', GENESIS, 1_700_000_000_000)
        const snap = await store.loadRoom('A')
        expect(snap).toEqual({ records: [GENESIS], clients: new Map(), maxSeq: 0, receipts: [] })
        expect(snap!.records[0]).toBeInstanceOf(Uint8Array)
      })

      it('refuses to create a room twice, keeping the first genesis', async () => {
        await store.createRoom('A', GENESIS, 1)
        await expectPetrelError(store.createRoom('A', text('other'), 2), 'storage_failed')
        expect((await store.loadRoom('A'))!.records.map(asText)).toEqual(['genesis'])
      })

      it('keeps rooms apart', async () => {
        await store.createRoom('A', text('gA'), 1)
        await store.createRoom('B', text('gB'), 1)
        await store.append(
          batch({
            rows: [row('A', 7, 0, 2)],
            bindings: [{ room: 'A', client: 7, device: 'dev-a' }],
            records: [{ room: 'A', bytes: text('joinA') }],
            receipts: [receipt('A', 'dev-a', 1, 1, 10, 10)],
          }),
        )
        expect(await store.loadRoom('B')).toEqual({ records: [text('gB')], clients: new Map(), maxSeq: 0, receipts: [] })
        expect(await store.readRows('B', 0, 10)).toEqual([])
        expect(await store.rowsOfClientsAfter('B', [7], 0, 10)).toEqual([])
        expect(await store.firstRowEndingAfter('B', 7, 0)).toBeUndefined()
        expect(await store.rowsCovering('B', 7, 0, 10)).toEqual([])
        expect(await store.roomBytes('B')).toBe(2)
      })
    })

    describe('records', () => {
      it('keeps records in the order accepted, within and across batches', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ records: [{ room: 'A', bytes: text('r1') }, { room: 'A', bytes: text('r2') }] }))
        await store.append(batch({ records: [{ room: 'A', bytes: text('r3') }] }))
        expect((await store.loadRoom('A'))!.records.map(asText)).toEqual(['genesis', 'r1', 'r2', 'r3'])
      })

      it('appends records of several rooms in one batch, each room in its own order', async () => {
        await store.createRoom('A', text('gA'), 1)
        await store.createRoom('B', text('gB'), 1)
        await store.append(
          batch({
            records: [
              { room: 'A', bytes: text('a1') },
              { room: 'B', bytes: text('b1') },
              { room: 'A', bytes: text('a2') },
              { room: 'B', bytes: text('b2') },
            ],
          }),
        )
        expect((await store.loadRoom('A'))!.records.map(asText)).toEqual(['gA', 'a1', 'a2'])
        expect((await store.loadRoom('B'))!.records.map(asText)).toEqual(['gB', 'b1', 'b2'])
      })

      it('returns record bytes exactly, including empty and all byte values', async () => {
        const all = new Uint8Array(256).map((_, i) => i)
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ records: [{ room: 'A', bytes: all }, { room: 'A', bytes: bytes() }] }))
        const records = (await store.loadRoom('A'))!.records
        expect(records[1]).toEqual(all)
        expect(records[2]).toEqual(bytes())
      })
    })

    describe('clients', () => {
      it('binds clients to devices, next clock 0 until a row arrives', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ bindings: [{ room: 'A', client: 7, device: 'dev-a' }, { room: 'A', client: 8, device: 'dev-b' }] }))
        expect((await store.loadRoom('A'))!.clients).toEqual(
          new Map([
            [7, { device: 'dev-a', next: 0 }],
            [8, { device: 'dev-b', next: 0 }],
          ]),
        )
      })

      it('computes next as the highest clock + len of each client', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(
          batch({
            bindings: [{ room: 'A', client: 7, device: 'dev-a' }, { room: 'A', client: 8, device: 'dev-b' }],
            rows: [row('A', 7, 0, 3), row('A', 8, 0, 1)],
          }),
        )
        await store.append(batch({ rows: [row('A', 7, 3, 2), row('A', 8, 1, 4)] }))
        expect((await store.loadRoom('A'))!.clients).toEqual(
          new Map([
            [7, { device: 'dev-a', next: 5 }],
            [8, { device: 'dev-b', next: 5 }],
          ]),
        )
      })

      it('treats binding a client again to the same device as a no-op', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ bindings: [{ room: 'A', client: 7, device: 'dev-a' }] }))
        await store.append(batch({ bindings: [{ room: 'A', client: 7, device: 'dev-a' }] }))
        expect((await store.loadRoom('A'))!.clients).toEqual(new Map([[7, { device: 'dev-a', next: 0 }]]))
      })

      it('keeps the full uint32 client id range and clocks beyond 32 bits', async () => {
        const client = 0xffff_ffff
        const clock = 2 ** 40
        await store.createRoom('A', GENESIS, 1_700_000_000_000)
        await store.append(batch({ bindings: [{ room: 'A', client, device: 'dev-a' }], rows: [row('A', client, clock, 3)] }))
        expect((await store.loadRoom('A'))!.clients.get(client)).toEqual({ device: 'dev-a', next: clock + 3 })
        const [read] = await store.readRows('A', 0, 1)
        expect(read).toMatchObject({ seq: 1, client, clock, len: 3 })
        expect(typeof read!.client).toBe('number')
        expect(await store.firstRowEndingAfter('A', client, clock)).toBe(1)
        expect(await store.rowsCovering('A', client, clock + 1, clock + 2)).toEqual([{ seq: 1, clock, len: 3 }])
        expect(await store.rowsOfClientsAfter('A', [client], 0, 10)).toEqual([{ seq: 1, client, clock, len: 3 }])
      })
    })

    describe('refusals', () => {
      it('keeps the refusals of a batch with its rows, read back by a client and clock range', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.createRoom('B', GENESIS, 1)
        const refusals = [
          { room: 'A', client: 7, clock: 1, len: 1, reason: 15 },
          { room: 'A', client: 7, clock: 3, len: 2, reason: 16 },
          { room: 'B', client: 7, clock: 1, len: 1, reason: 12 },
        ]
        await store.append(batch({ rows: [row('A', 7, 0, 5), row('B', 7, 0, 2)], refusals }))
        expect(await store.refusalsIn('A', 7, 0, 5)).toEqual([
          { clock: 1, len: 1, reason: 15 },
          { clock: 3, len: 2, reason: 16 },
        ])
        // Overlap, not containment: clock 4 lies in the refusal that starts at 3.
        expect(await store.refusalsIn('A', 7, 4, 5)).toEqual([{ clock: 3, len: 2, reason: 16 }])
        expect(await store.refusalsIn('A', 7, 2, 3)).toEqual([])
        expect(await store.refusalsIn('A', 8, 0, 5)).toEqual([])
        expect(await store.refusalsIn('B', 7, 0, 10)).toEqual([{ clock: 1, len: 1, reason: 12 }])
      })
    })

    describe('sequence numbers', () => {
      it('numbers rows 1, 2, 3… per room, in batch order, and returns the numbers', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.createRoom('B', GENESIS, 1)
        expect(await store.append(batch({ rows: [row('A', 7, 0, 1), row('B', 8, 0, 1), row('A', 7, 1, 1), row('A', 7, 2, 1)] }))).toEqual([
          1, 1, 2, 3,
        ])
        expect(await store.append(batch({ rows: [row('B', 8, 1, 1), row('A', 7, 3, 1)] }))).toEqual([2, 4])
        expect((await store.readRows('A', 0, 10)).map((r) => [r.seq, r.clock])).toEqual([
          [1, 0],
          [2, 1],
          [3, 2],
          [4, 3],
        ])
      })

      it('returns no numbers for a batch without rows', async () => {
        await store.createRoom('A', GENESIS, 1)
        expect(await store.append(batch({ records: [{ room: 'A', bytes: text('r') }] }))).toEqual([])
        expect(await store.append(batch({}))).toEqual([])
      })

      it('reports maxSeq as the last number handed out', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ rows: [row('A', 7, 0, 1), row('A', 7, 1, 1)] }))
        await store.append(batch({ rows: [row('A', 7, 2, 1)] }))
        expect((await store.loadRoom('A'))!.maxSeq).toBe(3)
      })

      it('gives concurrent appends to one room distinct, gapless numbers, each batch in order', async () => {
        await store.createRoom('A', GENESIS, 1)
        const results = await Promise.all(
          Array.from({ length: 12 }, (_, i) => store.append(batch({ rows: [row('A', i, 0, 1), row('A', i, 1, 1), row('A', i, 2, 1)] }))),
        )
        for (const seqs of results) expect(seqs).toEqual([seqs[0], seqs[0]! + 1, seqs[0]! + 2])
        expect(results.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: 36 }, (_, i) => i + 1))
        const stored = await store.readRows('A', 0, 100)
        expect(stored.map((r) => r.seq)).toEqual(Array.from({ length: 36 }, (_, i) => i + 1))
        for (const [i, seqs] of results.entries()) {
          expect(seqs.map((seq) => stored[seq - 1]!)).toMatchObject([{ client: i, clock: 0 }, { client: i, clock: 1 }, { client: i, clock: 2 }])
        }
      })
    })

    describe('reading rows', () => {
      it('reads rows after a cursor, in seq order, at most limit, with their content', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ rows: [row('A', 7, 0, 2), row('A', 7, 2, 1), row('A', 8, 0, 1)] }))
        await store.append(batch({ rows: [row('A', 7, 3, 1, bytes(0, 255, 1)), row('A', 8, 1, 2, bytes())] }))

        const all = await store.readRows('A', 0, 100)
        expect(all.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5])
        expect(all[0]).toEqual({ ...row('A', 7, 0, 2), seq: 1 })
        expect(all[3]).toEqual({ room: 'A', seq: 4, client: 7, clock: 3, len: 1, count: 1, structs: bytes(0, 255, 1) })
        expect(all[3]!.structs).toBeInstanceOf(Uint8Array)
        expect(all[4]!.structs).toEqual(bytes())

        expect((await store.readRows('A', 1, 2)).map((r) => r.seq)).toEqual([2, 3])
        expect((await store.readRows('A', 4, 100)).map((r) => r.seq)).toEqual([5])
        expect(await store.readRows('A', 5, 100)).toEqual([])
        expect(await store.readRows('unknown', 0, 100)).toEqual([])
      })

      it('keeps the mark of a row uploaded as a snapshot part, and reads other rows without one', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ rows: [row('A', 7, 0, 1), { ...row('A', 7, 1, 1), part: true }, row('A', 7, 2, 1)] }))
        const rows = await store.readRows('A', 0, 100)
        expect(rows.map((r) => r.part)).toEqual([undefined, true, undefined])
        expect(rows[1]).toEqual({ ...row('A', 7, 1, 1), seq: 2, part: true })
      })

      it('pages through a room without missing or repeating a row', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ rows: Array.from({ length: 25 }, (_, i) => row('A', 7, i, 1)) }))
        const seen: number[] = []
        let after = 0
        for (;;) {
          const page = await store.readRows('A', after, 7)
          if (page.length === 0) break
          expect(page.length).toBeLessThanOrEqual(7)
          seen.push(...page.map((r) => r.seq))
          after = page.at(-1)!.seq
        }
        expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => i + 1))
      })

      it('finds the first row of a client ending after a clock', async () => {
        await store.createRoom('A', GENESIS, 1)
        // client 7: [0,3) is seq 1, [3,5) seq 3, [5,6) seq 4; client 8 is seq 2.
        await store.append(batch({ rows: [row('A', 7, 0, 3), row('A', 8, 0, 10), row('A', 7, 3, 2), row('A', 7, 5, 1)] }))
        expect(await store.firstRowEndingAfter('A', 7, 0)).toBe(1)
        expect(await store.firstRowEndingAfter('A', 7, 2)).toBe(1)
        expect(await store.firstRowEndingAfter('A', 7, 3)).toBe(3)
        expect(await store.firstRowEndingAfter('A', 7, 4)).toBe(3)
        expect(await store.firstRowEndingAfter('A', 7, 5)).toBe(4)
        expect(await store.firstRowEndingAfter('A', 7, 6)).toBeUndefined()
        expect(await store.firstRowEndingAfter('A', 9, 0)).toBeUndefined()
        expect(await store.firstRowEndingAfter('unknown', 7, 0)).toBeUndefined()
      })

      it('lists the rows of a client overlapping [from, to), in clock order, without content', async () => {
        await store.createRoom('A', GENESIS, 1)
        // Seq order differs from clock order here, so the order promised (clock) is visible.
        await store.append(batch({ rows: [row('A', 7, 5, 4), row('A', 8, 0, 10), row('A', 7, 0, 3), row('A', 7, 3, 2)] }))
        expect(await store.rowsCovering('A', 7, 0, 9)).toEqual([
          { seq: 3, clock: 0, len: 3 },
          { seq: 4, clock: 3, len: 2 },
          { seq: 1, clock: 5, len: 4 },
        ])
        expect(await store.rowsCovering('A', 7, 4, 6)).toEqual([
          { seq: 4, clock: 3, len: 2 },
          { seq: 1, clock: 5, len: 4 },
        ])
        expect(await store.rowsCovering('A', 7, 2, 3)).toEqual([{ seq: 3, clock: 0, len: 3 }])
        // Touching is not overlapping: [3, 5) ends where [5, …) starts.
        expect(await store.rowsCovering('A', 7, 3, 5)).toEqual([{ seq: 4, clock: 3, len: 2 }])
        expect(await store.rowsCovering('A', 7, 9, 20)).toEqual([])
        expect(await store.rowsCovering('A', 9, 0, 20)).toEqual([])
      })

      it('lists rows of given clients after a seq, in seq order, at most limit, without content', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ rows: [row('A', 7, 0, 1), row('A', 8, 0, 1), row('A', 9, 0, 1), row('A', 7, 1, 2), row('A', 8, 1, 1)] }))
        expect(await store.rowsOfClientsAfter('A', [8, 7], 0, 100)).toEqual([
          { seq: 1, client: 7, clock: 0, len: 1 },
          { seq: 2, client: 8, clock: 0, len: 1 },
          { seq: 4, client: 7, clock: 1, len: 2 },
          { seq: 5, client: 8, clock: 1, len: 1 },
        ])
        expect(await store.rowsOfClientsAfter('A', [7, 8], 1, 2)).toEqual([
          { seq: 2, client: 8, clock: 0, len: 1 },
          { seq: 4, client: 7, clock: 1, len: 2 },
        ])
        expect(await store.rowsOfClientsAfter('A', [9], 3, 100)).toEqual([])
        expect(await store.rowsOfClientsAfter('A', [], 0, 100)).toEqual([])
        expect(await store.rowsOfClientsAfter('A', [42], 0, 100)).toEqual([])
      })
    })

    describe('append', () => {
      it('changes nothing for an empty batch', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({}))
        await store.append(batch({ receipts: [] }))
        expect(await store.loadRoom('A')).toEqual({ records: [GENESIS], clients: new Map(), maxSeq: 0, receipts: [] })
      })

      it('refuses rows for a room never created, leaving nothing of the batch and no gap in numbering', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ rows: [row('A', 7, 0, 1)], bindings: [{ room: 'A', client: 7, device: 'dev-a' }] }))
        const before = { snap: await store.loadRoom('A'), bytes: await store.roomBytes('A') }

        await expectPetrelError(
          store.append(
            batch({
              rows: [row('A', 7, 1, 1), row('nowhere', 8, 0, 1)],
              bindings: [{ room: 'A', client: 8, device: 'dev-b' }],
              records: [{ room: 'A', bytes: text('join') }],
              receipts: [receipt('A', 'dev-a', 1, 1, 5, 5)],
            }),
          ),
          'storage_failed',
        )

        expect(await store.loadRoom('A')).toEqual(before.snap)
        expect(await store.roomBytes('A')).toBe(before.bytes)
        expect((await store.readRows('A', 0, 10)).map((r) => r.seq)).toEqual([1])
        expect(await store.readRows('nowhere', 0, 10)).toEqual([])
        // The store still works, and numbering carries on from the last stored row.
        expect(await store.append(batch({ rows: [row('A', 7, 1, 1)] }))).toEqual([2])
      })

      it('refuses a row whose (room, seq) is taken, leaving nothing of its batch', async (ctx) => {
        if (!harness.rewindSeq) return ctx.skip()
        await store.createRoom('A', GENESIS, 1)
        await store.createRoom('B', GENESIS, 1)
        await store.append(batch({ rows: [row('A', 7, 0, 1), row('A', 7, 1, 1)], bindings: [{ room: 'A', client: 7, device: 'dev-a' }] }))
        await harness.rewindSeq('A', 1)
        const before = { a: await store.loadRoom('A'), b: await store.loadRoom('B'), bytes: await store.roomBytes('A') }

        await expectPetrelError(
          store.append(
            batch({
              rows: [row('B', 9, 0, 1), row('A', 8, 0, 1)],
              bindings: [
                { room: 'A', client: 8, device: 'dev-b' },
                { room: 'B', client: 9, device: 'dev-b' },
              ],
              records: [
                { room: 'A', bytes: text('join') },
                { room: 'B', bytes: text('join') },
              ],
              receipts: [receipt('A', 'dev-a', 1, 1, 5, 5)],
            }),
          ),
          'storage_failed',
        )

        expect(await store.loadRoom('A')).toEqual(before.a)
        expect(await store.loadRoom('B')).toEqual(before.b)
        expect(await store.roomBytes('A')).toBe(before.bytes)
        expect((await store.readRows('A', 0, 10)).map((r) => [r.seq, r.clock])).toEqual([
          [1, 0],
          [2, 1],
        ])
        expect(await store.readRows('B', 0, 10)).toEqual([])
      })

      it('stores concurrent appends to different rooms, all of them', async () => {
        const rooms = Array.from({ length: 8 }, (_, i) => `room-${i}`)
        for (const room of rooms) await store.createRoom(room, GENESIS, 1)
        await Promise.all(
          rooms.map(async (room, i) => {
            for (let k = 0; k < 5; k++) {
              await store.append(
                batch({
                  rows: [row(room, i, 2 * k, 1), row(room, i, 2 * k + 1, 1)],
                  bindings: k === 0 ? [{ room, client: i, device: `dev-${i}` }] : [],
                  records: [{ room, bytes: text(`${room}-${k}`) }],
                  receipts: [receipt(room, `dev-${i}`, 2 * k + 2, k, 100 + k, 200 + k)],
                }),
              )
            }
          }),
        )
        for (const [i, room] of rooms.entries()) {
          const snap = (await store.loadRoom(room))!
          expect(snap.maxSeq).toBe(10)
          expect(snap.clients).toEqual(new Map([[i, { device: `dev-${i}`, next: 10 }]]))
          expect(snap.records.map(asText)).toEqual(['genesis', ...Array.from({ length: 5 }, (_, k) => `${room}-${k}`)])
          expect(snap.receipts).toEqual([receipt(room, `dev-${i}`, 10, 4, 104, 204)])
          expect((await store.readRows(room, 0, 100)).map((r) => r.clock)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        }
      })

      it('stores concurrent batches that each touch several rooms', async () => {
        const rooms = ['A', 'B', 'C']
        for (const room of rooms) await store.createRoom(room, GENESIS, 1)
        // Opposite room orders in the two batches: a store locking per room must not deadlock.
        await Promise.all([
          store.append(batch({ records: rooms.map((room) => ({ room, bytes: text('x') })), rows: rooms.map((room) => row(room, 1, 0, 1)) })),
          store.append(
            batch({ records: [...rooms].reverse().map((room) => ({ room, bytes: text('y') })), rows: [...rooms].reverse().map((room) => row(room, 2, 0, 1)) }),
          ),
        ])
        for (const room of rooms) {
          const snap = (await store.loadRoom(room))!
          expect(snap.records.map(asText).sort()).toEqual(['genesis', 'x', 'y'])
          expect(snap.maxSeq).toBe(2)
        }
      })
    })

    describe('receipts', () => {
      it('stores a first receipt as given', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ receipts: [receipt('A', 'dev-a', 3, 2, 1000, 900)] }))
        expect((await store.loadRoom('A'))!.receipts).toEqual([receipt('A', 'dev-a', 3, 2, 1000, 900)])
      })

      it('keeps the maximum of each field, and takes a time only when its field increases', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ receipts: [receipt('A', 'dev-a', 5, 3, 100, 100)] }))
        // stored goes back, read advances: only read and readAt change.
        await store.append(batch({ receipts: [receipt('A', 'dev-a', 4, 4, 200, 200)] }))
        expect((await store.loadRoom('A'))!.receipts).toEqual([receipt('A', 'dev-a', 5, 4, 100, 200)])
        // Equal values are no increase: times stay.
        await store.append(batch({ receipts: [receipt('A', 'dev-a', 5, 4, 300, 300)] }))
        expect((await store.loadRoom('A'))!.receipts).toEqual([receipt('A', 'dev-a', 5, 4, 100, 200)])
        // stored advances, read goes back.
        await store.append(batch({ receipts: [receipt('A', 'dev-a', 9, 1, 400, 400)] }))
        expect((await store.loadRoom('A'))!.receipts).toEqual([receipt('A', 'dev-a', 9, 4, 400, 200)])
      })

      it('applies several receipts of one device in one batch as if one after another', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(batch({ receipts: [receipt('A', 'dev-a', 2, 1, 10, 10)] }))
        await store.append(
          batch({
            receipts: [
              receipt('A', 'dev-a', 6, 1, 20, 20),
              receipt('A', 'dev-a', 6, 5, 30, 30),
              receipt('A', 'dev-a', 3, 2, 40, 40),
              receipt('A', 'dev-b', 1, 0, 50, 50),
            ],
          }),
        )
        const receipts = (await store.loadRoom('A'))!.receipts.sort((a, b) => a.device.localeCompare(b.device))
        expect(receipts).toEqual([receipt('A', 'dev-a', 6, 5, 20, 30), receipt('A', 'dev-b', 1, 0, 50, 50)])
      })

      it('keeps receipts per room and per device', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.createRoom('B', GENESIS, 1)
        await store.append(
          batch({ receipts: [receipt('A', 'dev-a', 1, 1, 1, 1), receipt('B', 'dev-a', 7, 7, 2, 2), receipt('A', 'dev-b', 3, 0, 3, 3)] }),
        )
        const a = (await store.loadRoom('A'))!.receipts.sort((x, y) => x.device.localeCompare(y.device))
        expect(a).toEqual([receipt('A', 'dev-a', 1, 1, 1, 1), receipt('A', 'dev-b', 3, 0, 3, 3)])
        expect((await store.loadRoom('B'))!.receipts).toEqual([receipt('B', 'dev-a', 7, 7, 2, 2)])
      })
    })

    describe('roomBytes', () => {
      it('trims rows before a seq, keeping numbering, next clocks and later rows; bytes shrink', async () => {
        await store.createRoom('T', text('genesis'), 1)
        await store.append(batch({ bindings: [{ room: 'T', client: 7, device: 'd' }], rows: [row('T', 7, 0, 2), row('T', 7, 2, 1), row('T', 8, 0, 1)] }))
        const before = await store.roomBytes('T')
        expect(await store.trimRows('T', 3)).toBe(2)
        expect((await store.readRows('T', 0, 10)).map((r) => r.seq)).toEqual([3])
        expect(await store.roomBytes('T')).toBeLessThan(before)
        const snap = await store.loadRoom('T')
        expect(snap!.clients.get(7)).toEqual({ device: 'd', next: 3 })
        expect(snap!.maxSeq).toBe(3)
        expect(await store.append(batch({ rows: [row('T', 7, 3, 1)] }))).toEqual([4])
        expect(await store.trimRows('T', 1)).toBe(0)
        const reopened = await harness.reopen()
        expect((await reopened.loadRoom('T'))!.clients.get(7)!.next).toBe(4)
      })

      it('counts the bytes of rows and records, genesis included', async () => {
        expect(await store.roomBytes('unknown')).toBe(0)
        await store.createRoom('A', bytes(1, 2, 3), 1)
        expect(await store.roomBytes('A')).toBe(3)
        await store.append(
          batch({
            rows: [row('A', 7, 0, 1, new Uint8Array(100)), row('A', 7, 1, 1, new Uint8Array(50))],
            records: [{ room: 'A', bytes: new Uint8Array(20) }],
            // Receipts and bindings are bookkeeping, not stored content.
            bindings: [{ room: 'A', client: 7, device: 'dev-a' }],
            receipts: [receipt('A', 'dev-a', 2, 2, 1, 1)],
          }),
        )
        expect(await store.roomBytes('A')).toBe(173)
      })
    })

    describe('lifecycle', () => {
      it('keeps everything across close and reopen', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.append(
          batch({
            rows: [row('A', 7, 0, 2), row('A', 7, 2, 1, bytes(9, 9))],
            bindings: [{ room: 'A', client: 7, device: 'dev-a' }],
            records: [{ room: 'A', bytes: text('join') }],
            receipts: [receipt('A', 'dev-a', 2, 1, 10, 11)],
          }),
        )
        const snap = await store.loadRoom('A')
        const rows = await store.readRows('A', 0, 10)
        const size = await store.roomBytes('A')
        await store.close()

        const reopened = await harness.reopen()
        expect(snap).toEqual({
          records: [GENESIS, text('join')],
          clients: new Map([[7, { device: 'dev-a', next: 3 }]]),
          maxSeq: 2,
          receipts: [receipt('A', 'dev-a', 2, 1, 10, 11)],
        })
        expect(await reopened.loadRoom('A')).toEqual(snap)
        expect(await reopened.readRows('A', 0, 10)).toEqual(rows)
        expect(await reopened.roomBytes('A')).toBe(size)
        // Numbering carries on where the old store stopped.
        expect(await reopened.append(batch({ rows: [row('A', 7, 3, 1)] }))).toEqual([3])
      })

      it('rejects every operation with closed after close, and closes twice without error', async () => {
        await store.createRoom('A', GENESIS, 1)
        await store.close()
        await store.close()
        await expectPetrelError(store.loadRoom('A'), 'closed')
        await expectPetrelError(store.createRoom('B', GENESIS, 1), 'closed')
        await expectPetrelError(store.append(batch({ rows: [row('A', 7, 0, 1)] })), 'closed')
        await expectPetrelError(store.readRows('A', 0, 10), 'closed')
        await expectPetrelError(store.firstRowEndingAfter('A', 7, 0), 'closed')
        await expectPetrelError(store.rowsCovering('A', 7, 0, 1), 'closed')
        await expectPetrelError(store.rowsOfClientsAfter('A', [7], 0, 10), 'closed')
        await expectPetrelError(store.roomBytes('A'), 'closed')
      })
    })

    describeRelayStoreUpkeep(() => ({ store, harness }))
  })
}
