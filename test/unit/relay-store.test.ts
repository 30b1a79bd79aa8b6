import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { Client, escapeIdentifier } from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { openPostgresRelayStore, POSTGRES_SCHEMA_VERSION } from '../../src/relay/store/postgres-store.js'
import type { AppendBatch, NewRow, RelayStore } from '../../src/relay/store/relay-store.js'
import { prepareRelayWrites } from '../../src/relay/store/sqlite-relay-writes.js'
import { openSqliteRelayStore, ROOM_ID, SQLITE_RELAY_MIGRATIONS } from '../../src/relay/store/sqlite-store.js'
import { expectPetrelError } from './device-store.conformance.js'
import { type RelayStoreHarness, runRelayStoreConformance } from './relay-store.conformance.js'

/** Tracks every store it opens so cleanup can close them all, whichever the test left open. */
async function harness(
  open: () => Promise<RelayStore>,
  remove: () => Promise<void>,
  rewindSeq: RelayStoreHarness['rewindSeq'],
): Promise<RelayStoreHarness> {
  const opened: RelayStore[] = []
  const track = async (): Promise<RelayStore> => {
    const store = await open()
    opened.push(store)
    return store
  }
  return {
    store: await track(),
    reopen: track,
    cleanup: async () => {
      await Promise.all(opened.map((s) => s.close().catch(() => undefined)))
      await remove()
    },
    rewindSeq,
  }
}

for (const writer of ['thread', 'inline'] as const) {
runRelayStoreConformance(`SQLite relay store (writes ${writer === 'thread' ? 'on the writer thread' : 'inline'})`, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'petrel-relay-store-'))
  const file = join(dir, 'relay.db')
  return harness(
    async () => openSqliteRelayStore(file, { writer }),
    () => rm(dir, { recursive: true, force: true }),
    async (room, lastSeq) => {
      const db = new Database(file)
      try {
        db.prepare('UPDATE rooms SET next_seq = ? WHERE room = ?').run(lastSeq, room)
      } finally {
        db.close()
      }
    },
  )
})
}

describe('SQLite relay store: writes', () => {
  it('applies a planned compaction only to the rows it read: a row changed since leaves everything as it was', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'petrel-relay-store-'))
    const file = join(dir, 'relay.db')
    const room = 'room-compaction-race-0001'
    const store = openSqliteRelayStore(file)
    try {
      await store.createRoom(room, new Uint8Array([1]), Date.now())
      const row = (clock: number): NewRow => ({ room, client: 7, clock, len: 1, count: 1, structs: Uint8Array.of(8, clock) })
      await store.append({ rows: [row(0), row(1), row(2)], bindings: [{ room, client: 7, device: 'd' }], records: [] })
      await store.close()

      const db = new Database(file)
      try {
        const writes = prepareRelayWrites(db)
        const rows = () => db.prepare(`SELECT seq, clock, len, count FROM rows WHERE room_id = ${ROOM_ID} ORDER BY seq`).all(room)
        const before = rows()
        // Planned when row 2 covered clock 1 with len 1; it has since become something else.
        db.prepare(`UPDATE rows SET len = 2 WHERE room_id = ${ROOM_ID} AND seq = 2`).run(room)
        const changed = rows()
        const stale = { remove: [[1, 7, 0, 1], [2, 7, 1, 1], [3, 7, 2, 1]] as Array<[number, number, number, number]>, write: [{ seq: 1, client: 7, clock: 0, len: 3, count: 1, structs: Uint8Array.of(0, 3) }] }
        expect(() => writes.applyCompaction(room, stale)).toThrow(/row 2 changed since it was planned/)
        expect(rows()).toEqual(changed)
        expect(changed).not.toEqual(before)
        // The same plan against the rows as read applies.
        db.prepare(`UPDATE rows SET len = 1 WHERE room_id = ${ROOM_ID} AND seq = 2`).run(room)
        expect(writes.applyCompaction(room, stale)).toEqual({ removed: 3, written: 1 })
        expect(rows()).toEqual([{ seq: 1, clock: 0, len: 3, count: 1 }])
      } finally {
        db.close()
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('SQLite relay store: schema', () => {
  it('migrates a version 5 database (rows keyed by room text) without losing a row, a floor or a sequence number', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'petrel-relay-store-'))
    const file = join(dir, 'relay.db')
    try {
      const old = new Database(file)
      old.exec(SQLITE_RELAY_MIGRATIONS.slice(0, 5).join('\n'))
      old.pragma('user_version = 5')
      const rooms = ['room-migrate-a', 'room-migrate-b']
      for (const [i, room] of rooms.entries()) {
        old.prepare('INSERT INTO rooms (room, created_at, next_seq) VALUES (?, ?, ?)').run(room, 100 + i, 4)
        old.prepare('INSERT INTO records (room, idx, bytes) VALUES (?, 0, ?)').run(room, Buffer.of(i))
        old.prepare('INSERT INTO clients (room, client, device) VALUES (?, 7, ?)').run(room, `device-${i}`)
        old.prepare('INSERT INTO client_floor (room, client, next) VALUES (?, 7, 2)').run(room)
        // Rows 1 and 2 were trimmed (the floor keeps clock 2); 3 and 4 remain.
        for (const seq of [3, 4]) old.prepare('INSERT INTO rows (room, seq, client, clock, len, count, structs) VALUES (?, ?, 7, ?, 1, 1, ?)').run(room, seq, seq - 1, Buffer.of(i, seq))
      }
      old.close()

      const store = openSqliteRelayStore(file)
      try {
        for (const [i, room] of rooms.entries()) {
          const loaded = await store.loadRoom(room)
          expect(loaded?.maxSeq).toBe(4)
          expect(loaded?.clients.get(7)).toEqual({ device: `device-${i}`, next: 4 })
          expect((await store.readRows(room, 0, 10)).map((r) => [r.seq, r.clock, [...r.structs]])).toEqual([
            [3, 2, [i, 3]],
            [4, 3, [i, 4]],
          ])
        }
        // Numbering carries on where it stopped, in the right room.
        const seqs = await store.append({ rows: [{ room: rooms[1]!, client: 7, clock: 4, len: 1, count: 1, structs: Uint8Array.of(9) }], bindings: [], records: [] })
        expect(seqs).toEqual([5])
        expect((await store.readRows(rooms[0]!, 0, 10)).map((r) => r.seq)).toEqual([3, 4])
        expect((await store.readRows(rooms[1]!, 0, 10)).map((r) => r.seq)).toEqual([3, 4, 5])
      } finally {
        await store.close()
      }
      const check = new Database(file)
      expect(check.pragma('user_version', { simple: true })).toBe(SQLITE_RELAY_MIGRATIONS.length)
      check.close()
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('SQLite relay store: WAL checkpoints', () => {
  it('are made by its worker thread while the relay keeps the connection (none inside a commit)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'petrel-relay-store-'))
    const file = join(dir, 'relay.db')
    const store = openSqliteRelayStore(file)
    try {
      await store.createRoom('room-checkpoint-00000001', new Uint8Array([1]), Date.now())
      const big = new Uint8Array(4096).fill(7)
      let clock = 0
      const appendMegabytes = async (mb: number) => {
        for (let b = 0; b < mb * 5; b++) {
          const rows = Array.from({ length: 50 }, () => ({ room: 'room-checkpoint-00000001', client: 1, clock: clock++, len: 1, count: 1, structs: big }))
          await store.append({ rows, bindings: clock === 50 ? [{ room: 'room-checkpoint-00000001', client: 1, device: 'd' }] : [], records: [] })
        }
      }
      const grows = async (from: number) => {
        const deadline = Date.now() + 5000
        while (statSync(file).size <= from + 1_000_000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
        return statSync(file).size
      }
      // The main connection never checkpoints (wal_autocheckpoint = 0), so only the worker can
      // copy pages from the WAL into the database file — and it keeps doing so.
      let size = statSync(file).size
      for (let round = 0; round < 2; round++) {
        await appendMegabytes(2)
        const after = await grows(size)
        expect(after).toBeGreaterThan(size + 1_000_000)
        size = after
      }
    } finally {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})

// --- PostgreSQL ---------------------------------------------------------------------------

const DEFAULT_URL = 'postgres://postgres@127.0.0.1:5432/test'

/** Local servers differ in which role trust auth lets in (postgres or the OS user, often root). */
function candidateUrls(): string[] {
  const configured = process.env.PETREL_TEST_POSTGRES
  if (configured) return [configured]
  const asRoot = new URL(DEFAULT_URL)
  asRoot.username = 'root'
  return [DEFAULT_URL, asRoot.toString()]
}

async function findPostgres(): Promise<{ url: string } | { error: string }> {
  const errors: string[] = []
  for (const url of candidateUrls()) {
    const client = new Client({ connectionString: url, connectionTimeoutMillis: 3000 })
    try {
      await client.connect()
      await client.query('SELECT 1')
      return { url }
    } catch (err) {
      errors.push(`${url}: ${(err as Error).message}`)
    } finally {
      await client.end().catch(() => undefined)
    }
  }
  return { error: errors.join('; ') }
}

/** Runs SQL as a separate connection, the way an operator or another node would see the database. */
async function sql<T extends Record<string, unknown>>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query<T>(text, values)).rows
  } finally {
    await client.end()
  }
}

const freshSchema = (): string => `petrel_test_${randomBytes(6).toString('hex')}`
const dropSchema = (url: string, schema: string) => sql(url, `DROP SCHEMA IF EXISTS ${escapeIdentifier(schema)} CASCADE`)

const row = (room: string, client: number, clock: number): NewRow => ({ room, client, clock, len: 1, count: 1, structs: new Uint8Array([client, clock]) })
const batch = (parts: Partial<AppendBatch>): AppendBatch => ({ rows: [], bindings: [], records: [], ...parts })

const postgres = await findPostgres()

if ('url' in postgres) {
  const { url } = postgres

  runRelayStoreConformance('PostgreSQL relay store', async () => {
    const schema = freshSchema()
    return harness(
      () => openPostgresRelayStore(url, { schema, poolSize: 4 }),
      () => dropSchema(url, schema).then(() => undefined),
      async (room, lastSeq) => {
        await sql(url, `UPDATE ${escapeIdentifier(schema)}.rooms SET next_seq = $1 WHERE room = $2`, [lastSeq, room])
      },
    )
  })

  describe('openPostgresRelayStore', () => {
    const schemas: string[] = []
    const stores: RelayStore[] = []
    const schema = (): string => {
      const s = freshSchema()
      schemas.push(s)
      return s
    }
    const open = async (s: string): Promise<RelayStore> => {
      const store = await openPostgresRelayStore(url, { schema: s, poolSize: 4 })
      stores.push(store)
      return store
    }
    afterEach(async () => {
      await Promise.all(stores.splice(0).map((s) => s.close().catch(() => undefined)))
      for (const s of schemas.splice(0)) await dropSchema(url, s)
    })

    it('creates its schema and records each applied version in petrel_schema', async () => {
      const s = schema()
      await open(s)
      const versions = await sql<{ version: number }>(url, `SELECT version FROM ${escapeIdentifier(s)}.petrel_schema ORDER BY version`)
      expect(versions.map((v) => v.version)).toEqual(Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => i + 1))
    })

    it('lets several nodes start at once on a fresh schema, migrating it once', async () => {
      const s = schema()
      const [a, b] = await Promise.all([open(s), open(s), open(s)])
      const versions = await sql<{ version: number }>(url, `SELECT version FROM ${escapeIdentifier(s)}.petrel_schema ORDER BY version`)
      expect(versions.map((v) => v.version)).toEqual(Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => i + 1))
      await a!.createRoom('A', new Uint8Array([1]), 1)
      expect((await b!.loadRoom('A'))?.records).toEqual([new Uint8Array([1])])
    })

    it('uses a schema that exists already, as an operator may create it', async () => {
      const s = schema()
      await sql(url, `CREATE SCHEMA ${escapeIdentifier(s)}`)
      const store = await open(s)
      expect(await store.loadRoom('A')).toBeUndefined()
    })

    it('refuses a schema written by a newer version, leaving it untouched', async () => {
      const s = schema()
      await (await open(s)).close()
      await sql(url, `INSERT INTO ${escapeIdentifier(s)}.petrel_schema (version) VALUES ($1)`, [POSTGRES_SCHEMA_VERSION + 1])
      const err = await expectPetrelError(open(s), 'version_mismatch')
      expect(err.message).toMatch(/newer/)
      const versions = await sql<{ max: number }>(url, `SELECT MAX(version) AS max FROM ${escapeIdentifier(s)}.petrel_schema`)
      expect(versions[0]!.max).toBe(POSTGRES_SCHEMA_VERSION + 1)
    })

    it('reports an unreachable server as storage_failed', async () => {
      const unreachable = new URL(url)
      unreachable.port = '1'
      await expectPetrelError(openPostgresRelayStore(unreachable.toString(), { schema: 'unused' }), 'storage_failed')
    })

    it('keeps schemas apart, so deployments (and tests) can share a database', async () => {
      const [a, b] = await Promise.all([open(schema()), open(schema())])
      await a.createRoom('A', new Uint8Array([1]), 1)
      expect(await b.loadRoom('A')).toBeUndefined()
      await b.createRoom('A', new Uint8Array([2]), 1)
    })

    describe('with two nodes on one schema', () => {
      const schemaOf = new Map<RelayStore, string>()
      const twoNodes = async (): Promise<[RelayStore, RelayStore]> => {
        const s = schema()
        const a = await open(s)
        const b = await open(s)
        schemaOf.set(a, s)
        await a.createRoom('A', new Uint8Array([0]), 1)
        return [a, b]
      }

      it('gives rows appended through both nodes at once distinct, gapless seqs', async () => {
        const [a, b] = await twoNodes()
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).append(batch({ rows: [row('A', i, 0), row('A', i, 1)] }))),
        )
        for (const seqs of results) expect(seqs[1]).toBe(seqs[0]! + 1)
        expect(results.flat().sort((x, y) => x - y)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1))
        expect((await b.loadRoom('A'))!.maxSeq).toBe(40)
      })

      it('never lets a reader resuming after the last seq it saw skip a row', async () => {
        const [a, b] = await twoNodes()
        const reader = await open(schemaOf.get(a)!)
        const writes = 60
        let writing = true
        const writers = Promise.all(
          [a, b].map(async (node, n) => {
            for (let i = 0; i < writes / 2; i++) {
              const rows = Array.from({ length: 1 + (i % 3) }, (_, k) => row('A', n, 10 * i + k))
              await node.append(batch({ rows }))
            }
          }),
        ).finally(() => {
          writing = false
        })
        // Every page must start right after the cursor and run without gaps: numbering is
        // gapless, so a hole would be a row committed after a reader passed its seq.
        const seen: number[] = []
        let after = 0
        for (let idle = 0; writing || idle < 2; ) {
          const page = await reader.readRows('A', after, 5)
          if (page.length === 0) {
            if (!writing) idle++
            continue
          }
          expect(page.map((r) => r.seq)).toEqual(page.map((_, i) => after + 1 + i))
          seen.push(...page.map((r) => r.seq))
          after = page.at(-1)!.seq
        }
        await writers
        const total = (await a.loadRoom('A'))!.maxSeq
        expect(seen).toEqual(Array.from({ length: total }, (_, i) => i + 1))
      })

      it('refuses to bind a client id to a second device, within a batch or across nodes', async () => {
        const [a, b] = await twoNodes()
        await a.append(batch({ bindings: [{ room: 'A', client: 7, device: 'dev-a' }] }))
        const err = await expectPetrelError(b.append(batch({ bindings: [{ room: 'A', client: 7, device: 'dev-b' }] })), 'storage_failed')
        expect(err.message).toMatch(/already bound/)
        await expectPetrelError(
          a.append(
            batch({
              bindings: [
                { room: 'A', client: 8, device: 'dev-a' },
                { room: 'A', client: 8, device: 'dev-b' },
              ],
            }),
          ),
          'storage_failed',
        )
        expect((await b.loadRoom('A'))!.clients).toEqual(new Map([[7, { device: 'dev-a', next: 0 }]]))
      })

      it('keeps every record when both nodes append records to one room at once', async () => {
        const [a, b] = await twoNodes()
        await Promise.all(
          Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).append(batch({ records: [{ room: 'A', bytes: new Uint8Array([i + 1]) }] }))),
        )
        const records = (await a.loadRoom('A'))!.records.map((r) => r[0])
        expect(records[0]).toBe(0)
        expect(records.slice(1).sort((x, y) => x! - y!)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
      })
    })

    it("holds the room's advisory lock while appending, and only that room's", async () => {
      const s = schema()
      const store = await open(s)
      await store.createRoom('A', new Uint8Array([0]), 1)
      await store.createRoom('B', new Uint8Array([0]), 1)
      const other = new Client({ connectionString: url })
      await other.connect()
      try {
        await other.query('BEGIN')
        await other.query('SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))', [s, 'A'])
        let appended = false
        const pending = store.append(batch({ rows: [row('A', 7, 0)] })).then(() => {
          appended = true
        })
        await store.append(batch({ rows: [row('B', 7, 0)] }))
        await new Promise((resolve) => setTimeout(resolve, 200))
        expect(appended).toBe(false)
        await other.query('COMMIT')
        await pending
        expect((await store.readRows('A', 0, 10)).map((r) => r.seq)).toEqual([1])
      } finally {
        await other.end()
      }
    })
  })
} else if (process.env.CI === 'true') {
  describe('PostgreSQL relay store', () => {
    it('needs a reachable PostgreSQL on CI', () => {
      throw new Error(`PostgreSQL unreachable (set PETREL_TEST_POSTGRES): ${postgres.error}`)
    })
  })
} else {
  const reason = `no PostgreSQL reachable (set PETREL_TEST_POSTGRES): ${postgres.error}`
  console.warn(`[relay-store] skipping the PostgreSQL relay store tests: ${reason}`)
  describe.skipIf(true)(`PostgreSQL relay store (skipped: ${reason})`, () => {
    it('runs the conformance suite', () => undefined)
  })
}
