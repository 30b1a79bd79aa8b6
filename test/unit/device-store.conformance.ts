/**
 * The DeviceStore contract as executable spec, run against every backend by
 * device-store.test.ts. Backend-specific behaviour (file layout, quota fakes) is tested there.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Batch, DeviceStore, LogRow } from '../../src/client/storage/device-store.js'
import { type ErrorCode, isPetrelError } from '../../src/shared/errors.js'

export interface StoreHarness {
  store: DeviceStore
  /** Opens the same storage again; call after closing `store`. */
  reopen: () => Promise<DeviceStore>
  /** Closes every store the harness opened and removes the storage. */
  cleanup: () => Promise<void>
}

const bytes = (...xs: number[]): Uint8Array => new Uint8Array(xs)
const text = (s: string): Uint8Array => new TextEncoder().encode(s)
const asText = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b))
const logText = (rows: LogRow[]): string[] => rows.map((r) => new TextDecoder().decode(r.bytes))

/** Resolves to the rejection of `p` (failing the test if it resolves) and checks its code. */
export async function expectPetrelError(p: Promise<unknown>, code: ErrorCode): Promise<Error> {
  const outcome = await p.then(
    () => ({ resolved: true as const }),
    (err: unknown) => ({ resolved: false as const, err }),
  )
  if (outcome.resolved) throw new Error(`expected a PetrelError(${code}), but the promise resolved`)
  expect(isPetrelError(outcome.err, code), `expected PetrelError(${code}), got ${String(outcome.err)}`).toBe(true)
  return outcome.err as Error
}

/**
 * Registers the DeviceStore conformance tests for one backend. `open` makes fresh, isolated
 * storage per test.
 *
 * @example
 * ```ts
 * runDeviceStoreConformance('SqliteStore', async () => {
 *   const file = join(await mkdtemp(join(tmpdir(), 'petrel-')), 'store.db')
 *   const store = await openSqliteStore(file)
 *   return { store, reopen: () => openSqliteStore(file), cleanup: () => store.close() }
 * })
 * ```
 */
export function runDeviceStoreConformance(name: string, open: () => Promise<StoreHarness>): void {
  describe(name, () => {
    let harness: StoreHarness
    let store: DeviceStore

    beforeEach(async () => {
      harness = await open()
      store = harness.store
    })
    afterEach(async () => {
      await harness.cleanup()
    })

    const append = async (convId: string, doc: 'outer' | 'inner', value: string): Promise<LogRow> => {
      await store.commit({ append: [{ convId, doc, bytes: text(value) }] })
      const rows = await store.loadLog(convId, doc)
      return rows.at(-1)!
    }

    describe('key-value', () => {
      it('returns undefined for a key never written', async () => {
        expect(await store.get('missing')).toBeUndefined()
      })

      it('returns what was put, the latest put wins, and null deletes', async () => {
        await store.commit({ put: [['k', text('one')]] })
        expect(asText(await store.get('k'))).toBe('one')
        await store.commit({ put: [['k', text('two')]] })
        expect(asText(await store.get('k'))).toBe('two')
        await store.commit({ put: [['k', null]] })
        expect(await store.get('k')).toBeUndefined()
        // Deleting a missing key is not an error.
        await store.commit({ put: [['never', null]] })
      })

      it('applies puts of one batch in order', async () => {
        await store.commit({
          put: [
            ['k', text('first')],
            ['k', text('second')],
            ['gone', text('x')],
            ['gone', null],
          ],
        })
        expect(asText(await store.get('k'))).toBe('second')
        expect(await store.get('gone')).toBeUndefined()
      })

      it('lists exactly the keys with a prefix, in key order', async () => {
        const keys = ['a/2', 'a/10', 'a/1', 'b/1', 'a', 'a0', 'A/1', 'a/']
        await store.commit({ put: keys.map((k) => [k, text(`v:${k}`)]) })
        const listed = await store.list('a/')
        expect(listed.map(([k]) => k)).toEqual(['a/', 'a/1', 'a/10', 'a/2'])
        expect(listed.map(([, v]) => asText(v))).toEqual(['v:a/', 'v:a/1', 'v:a/10', 'v:a/2'])
        expect((await store.list('')).map(([k]) => k)).toEqual([...keys].sort())
        expect(await store.list('zz')).toEqual([])
      })

      it('orders keys by UTF-16 code units, the same on every backend', async () => {
        // UTF-8 byte order puts U+1F600 after U+FFFD; UTF-16 order puts it before.
        await store.commit({
          put: [
            ['p/\uFFFD', bytes(1)],
            ['p/\u{1F600}', bytes(2)],
            ['p/z', bytes(3)],
          ],
        })
        expect((await store.list('p/')).map(([k]) => k)).toEqual(['p/z', 'p/\u{1F600}', 'p/\uFFFD'])
      })

      it('stores exactly the bytes of a view, and empty values', async () => {
        const big = bytes(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
        await store.commit({
          put: [
            ['view', big.subarray(3, 6)],
            ['empty', new Uint8Array(0)],
          ],
          append: [{ convId: 'c', doc: 'outer', bytes: big.subarray(8) }],
        })
        expect(await store.get('view')).toEqual(bytes(3, 4, 5))
        const empty = await store.get('empty')
        expect(empty).toBeInstanceOf(Uint8Array)
        expect(empty?.byteLength).toBe(0)
        expect((await store.loadLog('c', 'outer'))[0]?.bytes).toEqual(bytes(8, 9))
      })
    })

    describe('log', () => {
      it('returns the rows of one document of one conversation in append order', async () => {
        await store.commit({
          append: [
            { convId: 'A', doc: 'outer', bytes: text('A1') },
            { convId: 'B', doc: 'outer', bytes: text('B1') },
            { convId: 'A', doc: 'inner', bytes: text('Ai1') },
          ],
        })
        await store.commit({
          append: [
            { convId: 'A', doc: 'outer', bytes: text('A2') },
            { convId: 'A', doc: 'outer', bytes: text('A3') },
          ],
        })
        const rows = await store.loadLog('A', 'outer')
        expect(logText(rows)).toEqual(['A1', 'A2', 'A3'])
        expect(logText(await store.loadLog('A', 'inner'))).toEqual(['Ai1'])
        expect(logText(await store.loadLog('B', 'outer'))).toEqual(['B1'])
        expect(await store.loadLog('B', 'inner')).toEqual([])
        expect(await store.loadLog('nope', 'outer')).toEqual([])
      })

      it('gives every appended row a larger id than any row before it', async () => {
        const ids: number[] = []
        for (const conv of ['A', 'B', 'A', 'C', 'B']) ids.push((await append(conv, 'outer', conv)).id)
        for (const id of ids) expect(Number.isSafeInteger(id) && id > 0).toBe(true)
        expect([...ids].sort((a, b) => a - b)).toEqual(ids)
        expect(new Set(ids).size).toBe(ids.length)
      })
    })

    describe('compaction', () => {
      it('replaces rows through throughId by one row that stays ahead of later rows', async () => {
        const r1 = await append('A', 'outer', 'r1')
        await append('B', 'outer', 'other conv')
        const r2 = await append('A', 'outer', 'r2')
        await append('A', 'inner', 'other doc')
        const r3 = await append('A', 'outer', 'r3')

        await store.commit({ compact: [{ convId: 'A', doc: 'outer', throughId: r2.id, merged: text('m12') }] })
        let rows = await store.loadLog('A', 'outer')
        expect(logText(rows)).toEqual(['m12', 'r3'])
        expect(rows.map((r) => r.id)).toEqual([r2.id, r3.id])
        expect(r1.id).toBeLessThan(r2.id)
        expect(logText(await store.loadLog('B', 'outer'))).toEqual(['other conv'])
        expect(logText(await store.loadLog('A', 'inner'))).toEqual(['other doc'])

        const r4 = await append('A', 'outer', 'r4')
        expect(r4.id).toBeGreaterThan(r3.id)
        expect(logText(await store.loadLog('A', 'outer'))).toEqual(['m12', 'r3', 'r4'])

        await store.commit({ compact: [{ convId: 'A', doc: 'outer', throughId: r4.id, merged: text('all') }] })
        rows = await store.loadLog('A', 'outer')
        expect(logText(rows)).toEqual(['all'])
        expect(rows[0]!.id).toBe(r4.id)
        // Ids are not reused for new rows even though rows were deleted.
        expect((await append('A', 'outer', 'r5')).id).toBeGreaterThan(r4.id)
      })

      it('accepts a throughId that falls between rows of the document', async () => {
        const r1 = await append('A', 'outer', 'r1')
        const other = await append('B', 'outer', 'b')
        const r2 = await append('A', 'outer', 'r2')
        await store.commit({ compact: [{ convId: 'A', doc: 'outer', throughId: other.id, merged: text('m') }] })
        const rows = await store.loadLog('A', 'outer')
        expect(logText(rows)).toEqual(['m', 'r2'])
        expect(rows[0]!.id).toBeLessThan(r2.id)
        expect(rows[0]!.id).toBe(r1.id)
        expect(logText(await store.loadLog('B', 'outer'))).toEqual(['b'])
      })

      it('applies appends before compactions within one batch', async () => {
        await append('A', 'outer', 'r1')
        const r2 = await append('A', 'outer', 'r2')
        await store.commit({
          append: [{ convId: 'A', doc: 'outer', bytes: text('r3') }],
          compact: [{ convId: 'A', doc: 'outer', throughId: r2.id, merged: text('m') }],
        })
        expect(logText(await store.loadLog('A', 'outer'))).toEqual(['m', 'r3'])
      })

      it('applies same-tick compactions of one document one after the other', async () => {
        const r1 = await append('A', 'outer', 'r1')
        const r2 = await append('A', 'outer', 'r2')
        await append('A', 'outer', 'r3')
        await Promise.all([
          store.commit({ compact: [{ convId: 'A', doc: 'outer', throughId: r1.id, merged: text('m1') }] }),
          store.commit({ compact: [{ convId: 'A', doc: 'outer', throughId: r2.id, merged: text('m2') }] }),
        ])
        const rows = await store.loadLog('A', 'outer')
        expect(logText(rows)).toEqual(['m2', 'r3'])
        expect(rows[0]!.id).toBe(r2.id)
      })

      it('lets a compaction see the rows an earlier same-tick compaction removed', async () => {
        const r1 = await append('A', 'outer', 'r1')
        const r2 = await append('A', 'outer', 'r2')
        await append('A', 'outer', 'r3')
        const [first, second] = await Promise.allSettled([
          store.commit({ compact: [{ convId: 'A', doc: 'outer', throughId: r2.id, merged: text('m12') }] }),
          // After the first, nothing of A/outer has an id <= r1 any more.
          store.commit({ compact: [{ convId: 'A', doc: 'outer', throughId: r1.id, merged: text('m1') }] }),
        ])
        expect(second.status).toBe('rejected')
        expect(logText(await store.loadLog('A', 'outer'))).toEqual(
          first.status === 'fulfilled' ? ['m12', 'r3'] : ['r1', 'r2', 'r3'],
        )
      })
    })

    describe('atomicity', () => {
      const seed = async (): Promise<void> => {
        await store.commit({
          put: [['keep', text('kept')]],
          append: [{ convId: 'A', doc: 'outer', bytes: text('a1') }],
        })
      }
      const expectSeedOnly = async (): Promise<void> => {
        expect(asText(await store.get('keep'))).toBe('kept')
        expect(await store.get('new')).toBeUndefined()
        expect((await store.list('')).map(([k]) => k)).toEqual(['keep'])
        expect(logText(await store.loadLog('A', 'outer'))).toEqual(['a1'])
        expect(await store.loadLog('B', 'outer')).toEqual([])
      }

      it('rejects a batch holding an invalid value and writes none of it', async () => {
        await seed()
        const bad = {
          put: [
            ['new', text('x')],
            ['keep', 'not bytes'],
          ],
          append: [{ convId: 'B', doc: 'outer', bytes: text('b') }],
        } as unknown as Batch
        await expectPetrelError(store.commit(bad), 'invalid_argument')
        await expectPetrelError(
          store.commit({ append: [{ convId: 'B', doc: 'middle', bytes: text('b') }] } as unknown as Batch),
          'invalid_argument',
        )
        await expectSeedOnly()
      })

      it('rolls back a batch that fails part-way and keeps earlier data', async () => {
        await seed()
        // The compaction has no rows to replace, so it fails after the put and append ran.
        const failing: Batch = {
          put: [
            ['new', text('x')],
            ['keep', null],
          ],
          append: [{ convId: 'B', doc: 'outer', bytes: text('b') }],
          compact: [{ convId: 'empty', doc: 'outer', throughId: 1_000_000, merged: text('m') }],
        }
        await expectPetrelError(store.commit(failing), 'invalid_argument')
        await expectSeedOnly()
        // The store is still usable afterwards.
        await store.commit({ put: [['new', text('ok')]] })
        expect(asText(await store.get('new'))).toBe('ok')
      })

      it('settles every same-tick commit: resolved ones are stored, rejected ones left nothing', async () => {
        await seed()
        const commits: Array<{ key: string; p: Promise<void> }> = [
          { key: 'g1', p: store.commit({ put: [['g1', text('1')]] }) },
          {
            key: 'bad',
            p: store.commit({
              put: [['bad', text('x')]],
              compact: [{ convId: 'empty', doc: 'outer', throughId: 5, merged: text('m') }],
            }),
          },
          { key: 'g2', p: store.commit({ put: [['g2', text('2')]] }) },
        ]
        const outcomes = await Promise.allSettled(commits.map((c) => c.p))
        expect(outcomes[1]?.status).toBe('rejected')
        for (const [i, { key }] of commits.entries()) {
          const stored = await store.get(key)
          if (outcomes[i]?.status === 'fulfilled') expect(asText(stored)).toBe(key.slice(1))
          else expect(stored).toBeUndefined()
        }
        expect(asText(await store.get('keep'))).toBe('kept')
        expect(logText(await store.loadLog('A', 'outer'))).toEqual(['a1'])
      })
    })

    describe('concurrency', () => {
      it('lands every commit issued in one tick, in call order, and resolves each', async () => {
        const n = 100
        const commits: Promise<void>[] = []
        for (let i = 0; i < n; i++) {
          commits.push(
            store.commit({
              put: [
                [`m/${String(i).padStart(3, '0')}`, text(String(i))],
                ['last', text(String(i))],
              ],
              append: [{ convId: 'A', doc: 'outer', bytes: text(String(i)) }],
            }),
          )
        }
        await Promise.all(commits)
        expect(await store.list('m/')).toHaveLength(n)
        expect(asText(await store.get('last'))).toBe(String(n - 1))
        expect(logText(await store.loadLog('A', 'outer'))).toEqual(Array.from({ length: n }, (_, i) => String(i)))
      })

      it('keeps commits issued across ticks in call order', async () => {
        const commits: Promise<void>[] = []
        for (let i = 0; i < 20; i++) {
          commits.push(store.commit({ append: [{ convId: 'A', doc: 'outer', bytes: text(String(i)) }] }))
          if (i % 3 === 0) await Promise.resolve()
          if (i % 7 === 0) await new Promise((r) => setTimeout(r, 0))
        }
        await Promise.all(commits)
        expect(logText(await store.loadLog('A', 'outer'))).toEqual(Array.from({ length: 20 }, (_, i) => String(i)))
      })
    })

    describe('commits that may wait (soon)', () => {
      it('lands a soon commit, durable when it resolves, in call order with ordinary ones', async () => {
        const commits = [
          store.commit({ append: [{ convId: 'A', doc: 'outer', bytes: text('received 1') }] }, { soon: true }),
          store.commit({ put: [['cursor', text('1')]] }, { soon: true }),
          store.commit({ append: [{ convId: 'A', doc: 'outer', bytes: text('sent') }] }),
          store.commit({ append: [{ convId: 'A', doc: 'outer', bytes: text('received 2') }] }, { soon: true }),
        ]
        await Promise.all(commits)
        await store.close()
        store = await harness.reopen()
        expect(logText(await store.loadLog('A', 'outer'))).toEqual(['received 1', 'sent', 'received 2'])
        expect(asText(await store.get('cursor'))).toBe('1')
      })

      it('still lands soon commits accepted before close, without waiting out their linger', async () => {
        const pending = store.commit({ put: [['late', text('yes')]] }, { soon: true })
        await store.close()
        await pending
        store = await harness.reopen()
        expect(asText(await store.get('late'))).toBe('yes')
      })
    })

    describe('copies', () => {
      it('returns arrays the caller owns, and keeps none of the caller’s', async () => {
        const input = text('abc')
        await store.commit({ put: [['k', input]], append: [{ convId: 'A', doc: 'outer', bytes: input }] })
        input[0] = 0x7a

        const got = (await store.get('k'))!
        got[1] = 0x7a
        const [[, listed]] = (await store.list('k')) as [[string, Uint8Array]]
        listed[2] = 0x7a
        const [row] = await store.loadLog('A', 'outer')
        row!.bytes[0] = 0x7a

        expect(asText(await store.get('k'))).toBe('abc')
        expect(logText(await store.loadLog('A', 'outer'))).toEqual(['abc'])
        expect(await store.get('k')).not.toBe(await store.get('k'))
      })
    })

    describe('durability and lifecycle', () => {
      it('keeps everything committed across close and reopen', async () => {
        await store.commit({
          put: [
            ['k1', text('v1')],
            ['k2', text('v2')],
          ],
        })
        const r1 = await append('A', 'outer', 'r1')
        const r2 = await append('A', 'outer', 'r2')
        await append('A', 'inner', 'i1')
        await store.commit({ compact: [{ convId: 'A', doc: 'outer', throughId: r1.id, merged: text('m1') }] })
        const before = await store.loadLog('A', 'outer')
        await store.close()

        store = await harness.reopen()
        expect(store.kind).toBe(harness.store.kind)
        expect((await store.list('')).map(([k, v]) => [k, asText(v)])).toEqual([
          ['k1', 'v1'],
          ['k2', 'v2'],
        ])
        expect(await store.loadLog('A', 'outer')).toEqual(before)
        expect(logText(await store.loadLog('A', 'inner'))).toEqual(['i1'])
        expect((await append('A', 'outer', 'r3')).id).toBeGreaterThan(r2.id)
      })

      it('still lands commits accepted before close', async () => {
        const pending = [
          store.commit({ put: [['a', text('1')]] }),
          store.commit({ append: [{ convId: 'A', doc: 'outer', bytes: text('x') }] }),
        ]
        const closed = store.close()
        await Promise.all(pending)
        await closed
        store = await harness.reopen()
        expect(asText(await store.get('a'))).toBe('1')
        expect(logText(await store.loadLog('A', 'outer'))).toEqual(['x'])
      })

      it('rejects every operation after close with code closed; close is idempotent', async () => {
        await store.commit({ put: [['k', text('v')]] })
        await Promise.all([store.close(), store.close()])
        await store.close()
        await expectPetrelError(store.get('k'), 'closed')
        await expectPetrelError(store.list(''), 'closed')
        await expectPetrelError(store.loadLog('A', 'outer'), 'closed')
        await expectPetrelError(store.commit({ put: [['k', text('w')]] }), 'closed')
      })
    })
  })
}
