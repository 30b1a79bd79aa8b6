/**
 * A server under test, alone in a child process (forked with IPC) so the load generator in
 * the parent does not share its core and its memory can be read on its own.
 *
 *   node server-child.js <kind> <dir>
 *   kind: petrel | raw-sqlite-ack | raw-broadcast | raw-idle | raw-handshake | y-websocket |
 *         y-websocket-leveldb | hocuspocus | hocuspocus-sqlite
 *
 * It sends `{ port }` once listening, answers `{ cmd: 'memory' }` with process.memoryUsage()
 * after a full GC (run it with --expose-gc), and `{ cmd: 'durable' }` with `{ durableAt }`: when
 * what it received so far was stored, for the peers that store after acknowledging (null for
 * the others).
 */
import { join } from 'node:path'
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8'
import type { AddressInfo } from 'node:net'
import Database from 'better-sqlite3'
import * as wsModule from 'ws'
import { type WebSocket, WebSocketServer } from 'ws'
import { createRelay, openSqliteRelayStore } from '../src/relay/index.js'

const [kind, dir] = process.argv.slice(2) as [string, string]

/** The relay's abuse limits, opened wide: a benchmark is one trusted machine flooding it. */
export const benchLimits = { framesPerSecond: 1e9, frameBurst: 1e9, maxConnectionsPerIp: 1e6, idleTimeoutMs: 3_600_000, heartbeatMs: 600_000 }

function listen(wss: WebSocketServer): Promise<number> {
  return new Promise((resolve, reject) => {
    wss.once('listening', () => resolve((wss.address() as AddressInfo).port))
    wss.once('error', reject)
  })
}

/**
 * The machine's limit for durable ingest: append every frame to SQLite (WAL, synchronous=FULL,
 * as the relay) in one transaction per event-loop turn, then acknowledge each frame.
 */
async function rawSqliteAck(): Promise<number> {
  const db = new Database(join(dir, 'raw.db'))
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = FULL')
  db.exec('CREATE TABLE rows (conn INTEGER, seq INTEGER, bytes BLOB)')
  const insert = db.prepare('INSERT INTO rows (conn, seq, bytes) VALUES (?, ?, ?)')
  let pending: Array<{ ws: WebSocket; conn: number; bytes: Buffer }> = []
  let seq = 0
  const flush = () => {
    const batch = pending
    pending = []
    db.transaction(() => {
      for (const p of batch) insert.run(p.conn, ++seq, p.bytes)
    })()
    for (const p of batch) p.ws.send(ACK)
  }
  const ACK = Buffer.from([1])
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false })
  let conns = 0
  wss.on('connection', (ws) => {
    const conn = ++conns
    ws.on('message', (data: Buffer) => {
      if (pending.length === 0) setImmediate(flush)
      pending.push({ ws, conn, bytes: data })
    })
  })
  return listen(wss)
}

/**
 * The machine's limit for fan-out: the first message byte 1 marks a sender; everything it
 * sends goes to every other connection, framed once and written with corked sockets.
 */
async function rawBroadcast(): Promise<number> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false })
  // ws's Sender.frame: the frame header and payload, built once for every recipient.
  const frameOnce = (wsModule as unknown as { Sender: { frame(data: Buffer, o: object): Buffer[] } }).Sender.frame
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer) => {
      const frame = frameOnce(data, { fin: true, rsv1: false, opcode: 2, mask: false, readOnly: false })
      const sockets: Array<{ cork(): void; uncork(): void; write(b: Buffer): void }> = []
      for (const peer of wss.clients) if (peer !== ws) sockets.push((peer as unknown as { _socket: (typeof sockets)[0] })._socket)
      for (const s of sockets) s.cork()
      for (const s of sockets) for (const b of frame) s.write(b)
      for (const s of sockets) s.uncork()
    })
  })
  return listen(wss)
}

/** Idle connections only: the memory reference (a `ws` server that keeps nothing per connection). */
async function rawIdle(): Promise<number> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false })
  wss.on('connection', (ws) => ws.on('message', () => {}))
  return listen(wss)
}

/**
 * The idle reference with Petrel's handshake traffic: a 41-byte hello on connect, then a
 * 2-byte and a 26-byte frame in answer to the client's first message (Petrel's ready and
 * rooms frames), so both servers' connections have carried the same frames.
 */
async function rawHandshake(): Promise<number> {
  const hello = Buffer.alloc(41, 1)
  const ready = Buffer.alloc(2, 2)
  const rooms = Buffer.alloc(26, 3)
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false })
  wss.on('connection', (ws) => {
    ws.send(hello)
    ws.on('message', () => {
      ws.send(ready)
      ws.send(rooms)
    })
  })
  return listen(wss)
}

/**
 * Resolves with the wall-clock time (ms since the epoch) at which everything the server has
 * received so far was stored, for the servers that store after they acknowledge (answers
 * `{ cmd: 'durable' }`); unset for the others.
 */
let durable: (() => Promise<number>) | undefined
const wallNow = () => performance.timeOrigin + performance.now()

async function yWebsocket(): Promise<number> {
  const { setPersistence, setupWSConnection } = await import('@y/websocket-server/utils')
  setPersistence(null)
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false })
  wss.on('connection', (ws, req) => setupWSConnection(ws, req))
  return listen(wss)
}

/**
 * @y/websocket-server with its own persistence: YPERSISTENCE makes it store every update in
 * LevelDB (y-leveldb), after its sync step 2 answer. y-leveldb chains every write on one
 * promise (`tr`): once it settles, all updates received before are written (LevelDB's default
 * writes: not fsync'd).
 */
async function yWebsocketLeveldb(): Promise<number> {
  process.env.YPERSISTENCE = join(dir, 'leveldb')
  const { getPersistence, setupWSConnection } = await import('@y/websocket-server/utils')
  const ldb = (getPersistence() as { provider: { tr: Promise<unknown> } } | null)?.provider
  if (!ldb) throw new Error('y-websocket persistence did not start')
  durable = async () => {
    for (let tr = ldb.tr; ; tr = ldb.tr) {
      await tr
      if (tr === ldb.tr) return wallNow()
    }
  }
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false })
  wss.on('connection', (ws, req) => setupWSConnection(ws, req))
  return listen(wss)
}

async function hocuspocus(): Promise<number> {
  const { Server } = await import('@hocuspocus/server')
  const server = new Server({ port: 0, address: '127.0.0.1', quiet: true, stopOnSignals: false })
  await server.listen()
  return server.address.port
}

/**
 * Hocuspocus storing in SQLite as its SQLite extension does (@hocuspocus/extension-sqlite: the
 * Database extension, one row per document holding its whole state, upserted on each store),
 * here over better-sqlite3 (the extension's sqlite3 needs a native build this machine cannot
 * download). Stores are debounced as Hocuspocus configures them by default (2 s after the last
 * change, 10 s at most): a document is stored once a store that began after its last change
 * has finished.
 */
async function hocuspocusSqlite(): Promise<number> {
  const { Server } = await import('@hocuspocus/server')
  const { Database: DatabaseExtension } = await import('@hocuspocus/extension-database')
  const db = new Database(join(dir, 'hocuspocus.db'))
  db.exec('CREATE TABLE IF NOT EXISTS "documents" ("name" varchar(255) NOT NULL, "data" blob NOT NULL, UNIQUE(name))')
  const select = db.prepare('SELECT data FROM "documents" WHERE name = ? ORDER BY rowid DESC')
  const upsert = db.prepare('INSERT INTO "documents" ("name", "data") VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET data = excluded.data')
  const changedAt = new Map<string, number>()
  const stored = new Map<string, { began: number; at: number }>()
  // BENCH_HOCUSPOCUS_DEBOUNCE=0: store on every change (Hocuspocus's default is 2,000 ms).
  const debounce = process.env.BENCH_HOCUSPOCUS_DEBOUNCE === undefined ? {} : { debounce: Number(process.env.BENCH_HOCUSPOCUS_DEBOUNCE) }
  const server = new Server({
    port: 0,
    address: '127.0.0.1',
    quiet: true,
    stopOnSignals: false,
    ...debounce,
    async onChange({ documentName }) {
      changedAt.set(documentName, performance.now())
    },
    extensions: [
      new DatabaseExtension({
        fetch: async ({ documentName }) => (select.get(documentName) as { data: Uint8Array } | undefined)?.data ?? null,
        store: async ({ documentName, state }) => {
          const began = performance.now()
          upsert.run(documentName, state)
          stored.set(documentName, { began, at: wallNow() })
        },
      }),
    ],
  })
  durable = async () => {
    for (;;) {
      let last = 0
      let all = true
      for (const [name, changed] of changedAt) {
        const s = stored.get(name)
        if (!s || s.began < changed) all = false
        else last = Math.max(last, s.at)
      }
      if (all) return last
      await new Promise((r) => setTimeout(r, 5))
    }
  }
  await server.listen()
  return server.address.port
}

async function petrel(): Promise<number> {
  // BENCH_RELAY_WRITER=thread: the relay's SQLite writes on the writer thread (inline by default).
  // BENCH_SPARE_PARTS=0: RelayOptions.spareSnapshotParts false (on by default, as in the relay).
  const file = join(dir, 'relay.db')
  const database = process.env.BENCH_RELAY_WRITER === 'thread' ? openSqliteRelayStore(file, { writer: 'thread' }) : file
  const relay = await createRelay({
    port: 0,
    host: '127.0.0.1',
    database,
    logLevel: (process.env.BENCH_RELAY_LOG as 'info' | undefined) ?? 'warn',
    limits: benchLimits,
    spareSnapshotParts: process.env.BENCH_SPARE_PARTS !== '0',
  })
  return relay.port
}

const starters: Record<string, () => Promise<number>> = {
  petrel,
  'raw-sqlite-ack': rawSqliteAck,
  'raw-broadcast': rawBroadcast,
  'raw-idle': rawIdle,
  'raw-handshake': rawHandshake,
  'y-websocket': yWebsocket,
  'y-websocket-leveldb': yWebsocketLeveldb,
  hocuspocus,
  'hocuspocus-sqlite': hocuspocusSqlite,
}

// A clean exit, so --cpu-prof (BENCH_CPU_PROF) gets to write its profile.
process.on('SIGTERM', () => process.exit(0))

if (process.send) {
  const start = starters[kind]
  if (!start) throw new Error(`unknown server kind ${kind}`)
  const port = await start()
  process.on('message', (msg: { cmd: string }) => {
    if (msg.cmd === 'memory') {
      const gc = (globalThis as { gc?: () => void }).gc
      gc?.()
      gc?.()
      // BENCH_HEAP_SNAPSHOT=<dir>: a heap snapshot at every reading, to diff before and after.
      const snapshots = process.env.BENCH_HEAP_SNAPSHOT
      if (snapshots) writeHeapSnapshot(join(snapshots, `${kind}-${Date.now()}.heapsnapshot`))
      const spaces = Object.fromEntries(getHeapSpaceStatistics().map((sp) => [sp.space_name, { size: sp.space_size, used: sp.space_used_size }]))
      process.send!({ memory: process.memoryUsage(), cpu: process.cpuUsage(), spaces })
    }
    if (msg.cmd === 'cpu') process.send!({ cpu: process.cpuUsage() })
    if (msg.cmd === 'durable') {
      if (!durable) process.send!({ durableAt: null })
      else void durable().then((durableAt) => process.send!({ durableAt }))
    }
  })
  process.send({ port })
}
