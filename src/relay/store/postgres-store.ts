/**
 * RelayStore on PostgreSQL (`pg`): the scaled-out backend, where several relay nodes share one
 * database. Same tables as the SQLite store; one transaction per group-committed batch.
 *
 * Several nodes append to one room at once. Every write to a room holds that room's advisory
 * lock (`pg_advisory_xact_lock`) until it commits, and seqs are taken from `rooms.next_seq`
 * under it, so a room's rows are numbered and become visible strictly in seq order, without
 * gaps; that is what lets `readRows` use "the last seq I saw" as a cursor (see readRows).
 * The (room, seq) primary key stays as the backstop: should numbering ever go wrong, the
 * append fails with StorageFailed instead of overwriting or interleaving rows.
 *
 * Compaction, membership changes and trims take the same room lock, so they serialise with
 * appends. The membership index and the link mailbox are not room data and need no lock of
 * their own: a membership change rides in an append (under its room's lock), and a mailbox
 * slot is claimed by its primary key (`ON CONFLICT DO NOTHING`) and taken by one `DELETE …
 * RETURNING`, so two takers can never both get a message.
 *
 * @example
 * ```ts
 * const store = await openPostgresRelayStore('postgres://relay@db:5432/petrel', { schema: 'petrel' })
 * const relay = await createRelay({ database: store })
 * ```
 */
import { type CustomTypesConfig, escapeIdentifier, Pool, type PoolClient, types as pgTypes } from 'pg'
import { ErrorCode, PetrelError } from '../../shared/errors.js'
import { MAX_GC_BYTES, planCompaction, type RowMeta } from './compaction.js'
import { type AppendBatch, assertLinkSlot, type ReceiptRow, type RelayStore, type RoomSnapshot, type Row } from './relay-store.js'

export interface PostgresRelayStoreOptions {
  /** Schema holding the tables, created if missing; default 'petrel'. */
  schema?: string
  /** Connections in the pool; default 10. */
  poolSize?: number
}

/**
 * Schema versions, applied in order at start; `petrel_schema` holds one row per applied
 * version. Client ids are uint32 and seqs grow without bound, so both need BIGINT.
 * `rooms.next_seq` is the last seq handed out, kept apart from MAX(rows.seq) so numbering
 * never depends on which rows exist. Version 3 adds `device_rooms` (the membership index, keyed
 * device first since only ever read by device) and `link_mailbox` (one row per occupied slot,
 * indexed by expiry so a purge does not scan live messages).
 */
const MIGRATIONS: Array<(s: string) => string> = [
  (s) => `
    CREATE TABLE ${s}.rooms (room TEXT PRIMARY KEY, created_at BIGINT NOT NULL, next_seq BIGINT NOT NULL DEFAULT 0);
    CREATE TABLE ${s}.records (room TEXT NOT NULL, idx INTEGER NOT NULL, bytes BYTEA NOT NULL, PRIMARY KEY (room, idx));
    CREATE TABLE ${s}.clients (room TEXT NOT NULL, client BIGINT NOT NULL, device TEXT NOT NULL, PRIMARY KEY (room, client));
    CREATE TABLE ${s}.rows (room TEXT NOT NULL, seq BIGINT NOT NULL, client BIGINT NOT NULL, clock BIGINT NOT NULL,
                            len BIGINT NOT NULL, count INTEGER NOT NULL, structs BYTEA NOT NULL, PRIMARY KEY (room, seq));
    CREATE INDEX rows_by_client ON ${s}.rows (room, client, clock);
    CREATE TABLE ${s}.receipts (room TEXT NOT NULL, device TEXT NOT NULL, stored BIGINT NOT NULL, read BIGINT NOT NULL,
                                stored_at BIGINT NOT NULL, read_at BIGINT NOT NULL, PRIMARY KEY (room, device));`,
  (s) => `CREATE TABLE ${s}.client_floor (room TEXT NOT NULL, client BIGINT NOT NULL, next BIGINT NOT NULL, PRIMARY KEY (room, client));`,
  (s) => `
    CREATE TABLE ${s}.device_rooms (device TEXT NOT NULL, room TEXT NOT NULL, PRIMARY KEY (device, room));
    CREATE TABLE ${s}.link_mailbox (id TEXT NOT NULL, slot SMALLINT NOT NULL, bytes BYTEA NOT NULL, expires_at BIGINT NOT NULL,
                                    PRIMARY KEY (id, slot));
    CREATE INDEX link_mailbox_by_expiry ON ${s}.link_mailbox (expires_at);`,
  // A row uploaded as a history snapshot's part (see the SQLite store's migration 7).
  (s) => `ALTER TABLE ${s}.rows ADD COLUMN part BOOLEAN NOT NULL DEFAULT false;`,
  // Items refused and blanked (see the SQLite store's migration 8).
  (s) => `CREATE TABLE ${s}.refusals (room TEXT NOT NULL, client BIGINT NOT NULL, clock BIGINT NOT NULL, len BIGINT NOT NULL,
                                      reason INTEGER NOT NULL, PRIMARY KEY (room, client, clock));`,
]

/** The schema version this build writes. */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length

const INT8_OID = 20

/**
 * BIGINT arrives as a string (it may exceed 2^53); every BIGINT here is a seq, clock, client id,
 * time or byte count that stays far below, so parse to number and refuse rather than round.
 */
const parseInt8 = (text: string): number => {
  const n = Number(text)
  if (!Number.isSafeInteger(n)) throw new RangeError(`BIGINT ${text} is beyond 2^53`)
  return n
}

// Per pool rather than pg.types.setTypeParser, which would change every other pg user in the process.
const typeParsers = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? parseInt8 : pgTypes.getTypeParser(oid, format)) as CustomTypesConfig['getTypeParser'],
}

const closedError = (): PetrelError => new PetrelError(ErrorCode.Closed, 'relay store is closed')

const storageError = (cause: unknown): PetrelError =>
  cause instanceof PetrelError ? cause : new PetrelError(ErrorCode.StorageFailed, `relay store: ${(cause as Error).message}`, { cause })

/** The last change of each (room, device) in batch order, which is what applying them one by one leaves. */
function foldDevices(devices: NonNullable<AppendBatch['devices']>): NonNullable<AppendBatch['devices']> {
  const folded = new Map<string, NonNullable<AppendBatch['devices']>[number]>()
  for (const d of devices) folded.set(JSON.stringify([d.room, d.device]), d)
  return [...folded.values()]
}

/** Folds receipts for the same (room, device) as if applied one after another, since one upsert statement cannot touch a row twice. */
function foldReceipts(receipts: ReceiptRow[]): ReceiptRow[] {
  const folded = new Map<string, ReceiptRow>()
  for (const r of receipts) {
    const key = JSON.stringify([r.room, r.device])
    const prev = folded.get(key)
    if (!prev) {
      folded.set(key, { ...r })
      continue
    }
    if (r.stored > prev.stored) [prev.stored, prev.storedAt] = [r.stored, r.storedAt]
    if (r.read > prev.read) [prev.read, prev.readAt] = [r.read, r.readAt]
  }
  return [...folded.values()]
}

export async function openPostgresRelayStore(url: string, options: PostgresRelayStoreOptions = {}): Promise<RelayStore> {
  const schemaName = options.schema ?? 'petrel'
  if (schemaName === '') throw new PetrelError(ErrorCode.InvalidArgument, 'schema name is empty')
  const s = escapeIdentifier(schemaName)
  let pool: Pool
  try {
    pool = new Pool({ connectionString: url, max: options.poolSize ?? 10, types: typeParsers })
  } catch (cause) {
    throw storageError(cause)
  }
  // An idle connection dropped by the server (restart, failover) is reported here; pg already
  // discards it, and without a listener the 'error' event would crash the process.
  pool.on('error', () => undefined)

  const transaction = async <T>(fn: (c: PoolClient) => Promise<T>, begin = 'BEGIN'): Promise<T> => {
    const c = await pool.connect()
    let broken = false
    // While checked out, a client's 'error' (the server gone mid-transaction) has no listener
    // of pg-pool's, and unheard it ended the process. The query under way rejects by itself.
    const dropped = () => {
      broken = true
    }
    c.on('error', dropped)
    try {
      await c.query(begin)
      const out = await fn(c)
      await c.query('COMMIT')
      return out
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {
        broken = true
      })
      throw err
    } finally {
      c.off('error', dropped)
      c.release(broken)
    }
  }

  let namespace: number
  try {
    await transaction(async (c) => {
      // Keyed by schema so nodes of one deployment serialize their start, while other schemas
      // (other deployments, parallel tests) do not wait on them. Taken before CREATE SCHEMA,
      // which races with itself in PostgreSQL even with IF NOT EXISTS.
      await c.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`petrel-migrate:${schemaName}`])
      const exists = await c.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schemaName])
      // Checked first so a pre-created schema needs no CREATE privilege on the database.
      if (exists.rowCount === 0) await c.query(`CREATE SCHEMA ${s}`)
      await c.query(`CREATE TABLE IF NOT EXISTS ${s}.petrel_schema (version INTEGER NOT NULL)`)
      const { rows } = await c.query<{ v: number }>(`SELECT COALESCE(MAX(version), 0) AS v FROM ${s}.petrel_schema`)
      const version = rows[0]!.v
      if (version > MIGRATIONS.length) {
        throw new PetrelError(ErrorCode.VersionMismatch, `relay database schema ${version} is newer than this relay (${MIGRATIONS.length})`)
      }
      for (let v = version; v < MIGRATIONS.length; v++) {
        await c.query(MIGRATIONS[v]!(s))
        await c.query(`INSERT INTO ${s}.petrel_schema (version) VALUES ($1)`, [v + 1])
      }
    })
    const { rows } = await pool.query<{ h: number }>('SELECT hashtext($1) AS h', [schemaName])
    namespace = rows[0]!.h
  } catch (cause) {
    await pool.end().catch(() => undefined)
    throw storageError(cause)
  }

  /**
   * Room locks use the two-int4 key space (schema, room), so they never meet the migration
   * lock nor another schema's rooms. Several rooms are locked in ascending key order, so two
   * batches touching the same rooms cannot deadlock, even when two rooms share a hash.
   */
  const lockRooms = async (c: PoolClient, rooms: string[]): Promise<void> => {
    if (rooms.length === 1) {
      await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [namespace, rooms[0]])
      return
    }
    const { rows } = await c.query<{ h: number }>('SELECT DISTINCT hashtext(r) AS h FROM unnest($1::text[]) AS r ORDER BY h', [rooms])
    // One simple-protocol query of several statements runs them in order, in one round trip;
    // the values are integers from the server, so nothing user-supplied is spliced in.
    await c.query(rows.map((r) => `SELECT pg_advisory_xact_lock(${namespace}, ${r.h});`).join(''))
  }

  /**
   * Gives each row the next seqs of its room, in batch order. Runs under the room locks, so the
   * block taken is contiguous and commits before the next writer of the room can take one.
   */
  const takeSeqs = async (c: PoolClient, rows: AppendBatch['rows']): Promise<number[]> => {
    const counts = new Map<string, number>()
    for (const r of rows) counts.set(r.room, (counts.get(r.room) ?? 0) + 1)
    const { rows: taken } = await c.query<{ room: string; last: number }>(
      `UPDATE ${s}.rooms AS r SET next_seq = r.next_seq + t.n FROM unnest($1::text[], $2::bigint[]) AS t(room, n)
       WHERE r.room = t.room RETURNING r.room, r.next_seq AS last`,
      [[...counts.keys()], [...counts.values()]],
    )
    const next = new Map<string, number>()
    for (const { room, last } of taken) next.set(room, last - counts.get(room)!)
    for (const room of counts.keys()) {
      if (!next.has(room)) throw new PetrelError(ErrorCode.StorageFailed, `relay store: append to unknown room ${room}`)
    }
    return rows.map((r) => {
      const seq = next.get(r.room)! + 1
      next.set(r.room, seq)
      return seq
    })
  }

  const appendIn = async (c: PoolClient, batch: AppendBatch): Promise<number[]> => {
    const receipts = foldReceipts(batch.receipts ?? [])
    const devices = foldDevices(batch.devices ?? [])
    const rooms = new Set<string>()
    for (const x of [...batch.rows, ...batch.bindings, ...batch.records, ...receipts, ...devices]) rooms.add(x.room)
    if (rooms.size === 0) return []
    await lockRooms(c, [...rooms])
    const seqs = batch.rows.length > 0 ? await takeSeqs(c, batch.rows) : []

    if (batch.records.length > 0) {
      // Records inserted by this statement are invisible to its own MAX, hence the row number for
      // several records of one room in one batch.
      await c.query(
        `INSERT INTO ${s}.records (room, idx, bytes)
         SELECT t.room, b.base + ROW_NUMBER() OVER (PARTITION BY t.room ORDER BY t.ord) - 1, t.bytes
         FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS t(room, bytes, ord)
         CROSS JOIN LATERAL (SELECT COALESCE(MAX(idx) + 1, 0) AS base FROM ${s}.records r WHERE r.room = t.room) AS b`,
        [batch.records.map((r) => r.room), batch.records.map((r) => r.bytes)],
      )
    }

    if (batch.bindings.length > 0) {
      // A client id is an authorship claim: binding it to a second device must fail, not be
      // ignored, or two nodes could each believe a different device owns it.
      const owners = new Map<string, string>()
      for (const b of batch.bindings) {
        const key = JSON.stringify([b.room, b.client])
        const owner = owners.get(key)
        if (owner !== undefined && owner !== b.device) {
          throw new PetrelError(ErrorCode.StorageFailed, `relay store: client ${b.client} of room ${b.room} bound to two devices in one batch`)
        }
        owners.set(key, b.device)
      }
      const { rows: taken } = await c.query<{ room: string; client: number }>(
        `WITH b AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) AS b(room, client, device)),
         ins AS (INSERT INTO ${s}.clients (room, client, device) SELECT room, client, device FROM b ON CONFLICT (room, client) DO NOTHING)
         SELECT b.room, b.client FROM b JOIN ${s}.clients c ON c.room = b.room AND c.client = b.client WHERE c.device <> b.device LIMIT 1`,
        [batch.bindings.map((b) => b.room), batch.bindings.map((b) => b.client), batch.bindings.map((b) => b.device)],
      )
      if (taken[0]) {
        throw new PetrelError(ErrorCode.StorageFailed, `relay store: client ${taken[0].client} of room ${taken[0].room} is already bound to another device`)
      }
    }

    if (batch.rows.length > 0) {
      const rows = batch.rows
      // unnest of column arrays: one statement and a fixed 7 parameters, however large the batch.
      await c.query(
        `INSERT INTO ${s}.rows (room, seq, client, clock, len, count, structs, part)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::int[], $7::bytea[], $8::boolean[])`,
        [
          rows.map((r) => r.room),
          seqs,
          rows.map((r) => r.client),
          rows.map((r) => r.clock),
          rows.map((r) => r.len),
          rows.map((r) => r.count),
          rows.map((r) => r.structs),
          rows.map((r) => r.part === true),
        ],
      )
    }

    const refusals = batch.refusals ?? []
    if (refusals.length > 0) {
      await c.query(
        `INSERT INTO ${s}.refusals (room, client, clock, len, reason)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::int[]) ON CONFLICT DO NOTHING`,
        [refusals.map((r) => r.room), refusals.map((r) => r.client), refusals.map((r) => r.clock), refusals.map((r) => r.len), refusals.map((r) => r.reason)],
      )
    }

    if (receipts.length > 0) {
      await c.query(
        `INSERT INTO ${s}.receipts AS r (room, device, stored, read, stored_at, read_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
         ON CONFLICT (room, device) DO UPDATE SET
           stored_at = CASE WHEN excluded.stored > r.stored THEN excluded.stored_at ELSE r.stored_at END,
           read_at = CASE WHEN excluded.read > r.read THEN excluded.read_at ELSE r.read_at END,
           stored = GREATEST(r.stored, excluded.stored),
           read = GREATEST(r.read, excluded.read)`,
        [
          receipts.map((r) => r.room),
          receipts.map((r) => r.device),
          receipts.map((r) => r.stored),
          receipts.map((r) => r.read),
          receipts.map((r) => r.storedAt),
          receipts.map((r) => r.readAt),
        ],
      )
    }

    const joined = devices.filter((d) => d.member)
    const left = devices.filter((d) => !d.member)
    if (joined.length > 0) {
      await c.query(
        `INSERT INTO ${s}.device_rooms (device, room) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING`,
        [joined.map((d) => d.device), joined.map((d) => d.room)],
      )
    }
    if (left.length > 0) {
      await c.query(
        `DELETE FROM ${s}.device_rooms AS d USING unnest($1::text[], $2::text[]) AS t(device, room) WHERE d.device = t.device AND d.room = t.room`,
        [left.map((d) => d.device), left.map((d) => d.room)],
      )
    }
    return seqs
  }

  let closed = false
  const guard = async <T>(fn: () => Promise<T>): Promise<T> => {
    if (closed) throw closedError()
    try {
      return await fn()
    } catch (cause) {
      // Whatever failed because close() ended the pool under it is a closed store, not an I/O fault.
      if (closed) throw closedError()
      throw storageError(cause)
    }
  }

  return {
    loadRoom: (room) =>
      guard(() =>
        // One snapshot, so maxSeq, next clocks and receipts agree even while another node writes.
        transaction(async (c): Promise<RoomSnapshot | undefined> => {
          const head = (await c.query<{ next_seq: number }>(`SELECT next_seq FROM ${s}.rooms WHERE room = $1`, [room])).rows[0]
          if (!head) return undefined
          const records = await c.query<{ bytes: Buffer }>(`SELECT bytes FROM ${s}.records WHERE room = $1 ORDER BY idx`, [room])
          const clientRows = await c.query<{ client: number; device: string }>(`SELECT client, device FROM ${s}.clients WHERE room = $1`, [room])
          const nextClocks = await c.query<{ client: number; next: number }>(
            `SELECT client, MAX(next) AS next FROM (
               SELECT client, MAX(clock + len) AS next FROM ${s}.rows WHERE room = $1 GROUP BY client
               UNION ALL SELECT client, next FROM ${s}.client_floor WHERE room = $1) AS n GROUP BY client`,
            [room],
          )
          const receipts = await c.query<{ device: string; stored: number; read: number; stored_at: number; read_at: number }>(
            `SELECT device, stored, read, stored_at, read_at FROM ${s}.receipts WHERE room = $1`,
            [room],
          )
          const clients = new Map<number, { device: string; next: number }>()
          for (const row of clientRows.rows) clients.set(row.client, { device: row.device, next: 0 })
          for (const row of nextClocks.rows) {
            const entry = clients.get(row.client)
            if (entry) entry.next = row.next
          }
          return {
            records: records.rows.map((r) => new Uint8Array(r.bytes)),
            clients,
            maxSeq: head.next_seq,
            receipts: receipts.rows.map((r) => ({
              room,
              device: r.device,
              stored: r.stored,
              read: r.read,
              storedAt: r.stored_at,
              readAt: r.read_at,
            })),
          }
        }, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY'),
      ),
    createRoom: (room, genesis, createdAt) =>
      guard(() =>
        transaction(async (c) => {
          await lockRooms(c, [room])
          await c.query(`INSERT INTO ${s}.rooms (room, created_at) VALUES ($1, $2)`, [room, createdAt])
          await c.query(`INSERT INTO ${s}.records (room, idx, bytes) VALUES ($1, 0, $2)`, [room, genesis])
        }),
      ),
    append: (batch) => guard(() => transaction((c) => appendIn(c, batch))),
    /**
     * Safe as a cursor across nodes: append numbers and commits a room's rows one writer at a
     * time under the room lock, so once any reader has seen seq N, every row below N is already
     * visible and none can appear later. The relay resumes with `afterSeq` = the last seq it
     * delivered, never a seq it heard of (bus message, another node) but has not read itself.
     */
    readRows: (room, afterSeq, limit) =>
      guard(async () => {
        const { rows } = await pool.query<Omit<Row, 'room' | 'structs'> & { structs: Buffer; part: boolean }>(
          `SELECT seq, client, clock, len, count, structs, part FROM ${s}.rows WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
          [room, afterSeq, limit],
        )
        return rows.map(({ part, ...r }) => (part ? { ...r, room, structs: new Uint8Array(r.structs), part: true } : { ...r, room, structs: new Uint8Array(r.structs) }))
      }),
    firstRowEndingAfter: (room, client, clock) =>
      guard(async () => {
        const { rows } = await pool.query<{ seq: number | null }>(
          `SELECT MIN(seq) AS seq FROM ${s}.rows WHERE room = $1 AND client = $2 AND clock + len > $3`,
          [room, client, clock],
        )
        return rows[0]?.seq ?? undefined
      }),
    rowsCovering: (room, client, from, to) =>
      guard(async () => {
        const { rows } = await pool.query<{ seq: number; clock: number; len: number }>(
          `SELECT seq, clock, len FROM ${s}.rows WHERE room = $1 AND client = $2 AND clock < $3 AND clock + len > $4 ORDER BY clock`,
          [room, client, to, from],
        )
        return rows
      }),
    refusalsIn: (room, client, from, to) =>
      guard(async () => {
        const { rows } = await pool.query<{ clock: number; len: number; reason: number }>(
          `SELECT clock, len, reason FROM ${s}.refusals WHERE room = $1 AND client = $2 AND clock < $3 AND clock + len > $4 ORDER BY clock`,
          [room, client, to, from],
        )
        return rows
      }),
    rowsOfClientsAfter: (room, clients, afterSeq, limit) =>
      guard(async () => {
        if (clients.length === 0) return []
        const { rows } = await pool.query<{ seq: number; client: number; clock: number; len: number }>(
          `SELECT seq, client, clock, len FROM ${s}.rows WHERE room = $1 AND client = ANY($2::bigint[]) AND seq > $3 ORDER BY seq LIMIT $4`,
          [room, clients, afterSeq, limit],
        )
        return rows
      }),
    trimRows: (room, beforeSeq) =>
      guard(() =>
        transaction(async (c) => {
          await lockRooms(c, [room])
          await c.query(
            `INSERT INTO ${s}.client_floor (room, client, next)
               SELECT room, client, MAX(clock + len) FROM ${s}.rows WHERE room = $1 AND seq < $2 GROUP BY room, client
             ON CONFLICT (room, client) DO UPDATE SET next = GREATEST(${s}.client_floor.next, excluded.next)`,
            [room, beforeSeq],
          )
          return (await c.query(`DELETE FROM ${s}.rows WHERE room = $1 AND seq < $2`, [room, beforeSeq])).rowCount ?? 0
        }),
      ),
    compactRows: (room, throughSeq, keep) =>
      guard(() =>
        transaction(async (c) => {
          await lockRooms(c, [room])
          const { rows } = await c.query<Omit<RowMeta, 'small'> & { small: Buffer | null }>(
            `SELECT seq, client, clock, len, count, CASE WHEN count = 1 AND octet_length(structs) <= ${MAX_GC_BYTES} THEN structs END AS small
             FROM ${s}.rows WHERE room = $1 AND seq <= $2`,
            [room, throughSeq],
          )
          const plan = planCompaction(
            rows.map((r) => ({ ...r, small: r.small && new Uint8Array(r.small) })),
            keep,
          )
          if (plan.remove.length > 0) await c.query(`DELETE FROM ${s}.rows WHERE room = $1 AND seq = ANY($2::bigint[])`, [room, plan.remove])
          if (plan.write.length > 0) {
            const w = plan.write
            await c.query(
              `INSERT INTO ${s}.rows (room, seq, client, clock, len, count, structs)
               SELECT $1::text, * FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::int[], $7::bytea[])`,
              [room, w.map((x) => x.seq), w.map((x) => x.client), w.map((x) => x.clock), w.map((x) => x.len), w.map((x) => x.count), w.map((x) => x.structs)],
            )
          }
          return { removed: plan.remove.length, written: plan.write.length }
        }),
      ),
    roomsOfDevice: (device) =>
      guard(async () => {
        // COLLATE "C": code point order, as SQLite sorts, whatever the database's locale.
        const { rows } = await pool.query<{ room: string }>(`SELECT room FROM ${s}.device_rooms WHERE device = $1 ORDER BY room COLLATE "C"`, [device])
        return rows.map((r) => r.room)
      }),
    putLink: (id, slot, bytes, expiresAt) =>
      guard(async () => {
        assertLinkSlot(slot)
        const { rowCount } = await pool.query(
          `INSERT INTO ${s}.link_mailbox (id, slot, bytes, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id, slot) DO NOTHING`,
          [id, slot, bytes, expiresAt],
        )
        return rowCount === 1
      }),
    takeLink: (id, slot, now) =>
      guard(async () => {
        assertLinkSlot(slot)
        const { rows } = await pool.query<{ bytes: Buffer; expires_at: number }>(
          `DELETE FROM ${s}.link_mailbox WHERE id = $1 AND slot = $2 RETURNING bytes, expires_at`,
          [id, slot],
        )
        const taken = rows[0]
        return taken && taken.expires_at > now ? new Uint8Array(taken.bytes) : undefined
      }),
    readLink: (id, slot, now) =>
      guard(async () => {
        assertLinkSlot(slot)
        const { rows } = await pool.query<{ bytes: Buffer }>(`SELECT bytes FROM ${s}.link_mailbox WHERE id = $1 AND slot = $2 AND expires_at > $3`, [id, slot, now])
        return rows[0] ? new Uint8Array(rows[0].bytes) : undefined
      }),
    purgeLinks: (now) =>
      guard(async () => (await pool.query(`DELETE FROM ${s}.link_mailbox WHERE expires_at <= $1`, [now])).rowCount ?? 0),
    roomBytes: (room) =>
      guard(async () => {
        const { rows } = await pool.query<{ b: number }>(
          `SELECT (SELECT COALESCE(SUM(octet_length(structs)), 0) FROM ${s}.rows WHERE room = $1)
                + (SELECT COALESCE(SUM(octet_length(bytes)), 0) FROM ${s}.records WHERE room = $1) AS b`,
          [room],
        )
        return rows[0]?.b ?? 0
      }),
    close: async () => {
      if (closed) return
      closed = true
      await pool.end()
    },
  }
}
