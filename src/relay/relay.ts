/**
 * `createRelay`: the blind relay as a running server.
 *
 * @example
 * ```ts
 * import { createRelay } from 'petrel/relay'
 * const relay = await createRelay({ port: 0 })
 * console.log(relay.url) // ws://127.0.0.1:54321
 * await relay.close()
 * ```
 */
import { existsSync } from 'node:fs'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createAdaptorServer } from '@hono/node-server'
import type { Hono } from 'hono'
import { WebSocketServer } from 'ws'
import { createRelayApp } from './app.js'
import { acceptWebSockets } from './upgrade.js'
import { defaultLimits, type RelayLimits } from './limits.js'
import { createLogger, type Logger, type LogLevel } from './log.js'
import { RelayMetrics } from './metrics.js'
import { RelayCore } from './relay-core.js'
import { openSqliteRelayStore } from './store/sqlite-store.js'
import { lockSqliteFile } from './store/sqlite-lock.js'
import type { RelayStore } from './store/relay-store.js'
import { randomBytes, toBase64Url } from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { CloseCode } from '../shared/wire.js'
import type { FanoutBus } from './bus/fanout-bus.js'
import { createLocalBus } from './bus/in-process-bus.js'
import { openRedisBus } from './bus/redis-bus.js'

export interface RelayOptions {
  /** Default 8787; 0 picks a free port. */
  port?: number
  /** Default 127.0.0.1. */
  host?: string
  /** SQLite file path (default ./.petrel/relay.db), a `postgres://` URL, or a RelayStore. */
  database?: string | RelayStore
  /** `redis://` URL of the fan-out bus shared by the nodes of a cluster. */
  redis?: string
  limits?: Partial<RelayLimits>
  logLevel?: LogLevel
  /** Where log lines go (default stdout). */
  logWrite?: (line: string) => void
  /**
   * A built web app served at `/` (the landing page while it has no index.html). Default: the
   * demo app's build, `examples/chat/dist` of the package this relay runs from.
   */
  staticRoot?: string
  /** Fan-out between nodes sharing one store; default: none needed (a single node). */
  bus?: FanoutBus
  /** This node's name in logs and on the bus; default a random id. */
  node?: string
  /**
   * Send devices that hold the history a placeholder instead of others' snapshot parts, live
   * and in the catch-ups of devices that ask (PROTOCOL §3): ~25 % less download for each live
   * member of a busy conversation, about half for one back from a short absence. Default
   * true. The relay cannot check that what a member uploads as a part is one; it stores the
   * mark and sends it with the row to every device, and clients of this version refuse a
   * marked envelope that is not a part, so they all agree. Clients of before it do not check:
   * in a conversation where some still run, false keeps a dishonest member from showing them
   * a message the others never see.
   */
  spareSnapshotParts?: boolean
  /**
   * Rows a catch-up reads from the store at once (default 2,000). Smaller sends the first page
   * sooner after more queries. Catch-ups and compaction's rewrite of the same room's rows never
   * overlap on one node, whatever this is (RelayCore.catchUp).
   */
  catchUpPageRows?: number
}

export interface Relay {
  /** ws://host:port */
  readonly url: string
  readonly port: number
  readonly app: Hono
  readonly metrics: RelayMetrics
  readonly store: RelayStore
  /** Stop accepting, tell clients to reconnect (close code 4503), flush, close the store. */
  close(): Promise<void>
}

export async function createRelay(options: RelayOptions = {}): Promise<Relay> {
  const pageRows = options.catchUpPageRows
  if (pageRows !== undefined && !(Number.isSafeInteger(pageRows) && pageRows >= 1)) {
    throw new PetrelError(ErrorCode.InvalidArgument, `catchUpPageRows must be a whole number of rows, at least 1 (got ${pageRows})`)
  }
  // From a config file or the CLI's JSON, `null`, `5` or `[1]` spread to nothing (or to "limit 0"),
  // and the relay started on its defaults, silently.
  const given: unknown = options.limits
  if (given !== undefined && (typeof given !== 'object' || given === null || Array.isArray(given))) {
    throw new PetrelError(ErrorCode.InvalidArgument, `relay limits must be an object of limit names to numbers (got ${JSON.stringify(given)})`)
  }
  const limits = { ...defaultLimits, ...options.limits }
  // Checked, not trusted: a limit of "1mb" left ws with no frame cap, and null refused every connection.
  for (const [name, value] of Object.entries(limits)) {
    if (!Object.hasOwn(defaultLimits, name)) throw new PetrelError(ErrorCode.InvalidArgument, `unknown relay limit ${name}`)
    if (!(Number.isSafeInteger(value) && value >= 1)) throw new PetrelError(ErrorCode.InvalidArgument, `relay limit ${name} must be a whole number, at least 1 (got ${JSON.stringify(value)})`)
  }
  const log: Logger = createLogger(options.logLevel ?? 'info', options.logWrite)
  const database = options.database ?? './.petrel/relay.db'
  const store = await openStore(database)
  // One node per SQLite file (store/sqlite-lock.ts): taken once the store made its folder.
  let unlock = () => {}
  if (typeof database === 'string' && !isPostgresUrl(database) && database !== ':memory:') {
    try {
      unlock = lockSqliteFile(database)
    } catch (err) {
      await store.close()
      throw err
    }
  }
  const metrics = new RelayMetrics()
  const node = options.node ?? `node-${toBase64Url(randomBytes(6))}`
  let bus: FanoutBus
  try {
    bus = options.bus ?? (options.redis ? await openRedisBus(options.redis, node, undefined, log) : createLocalBus(node))
  } catch (err) {
    metrics.stop()
    await store.close()
    unlock()
    throw err
  }
  const core = new RelayCore(store, limits, log, metrics, bus, node, options.spareSnapshotParts ?? true, options.catchUpPageRows)
  // Which store and bus, said once: two nodes on one database without a bus start cleanly and
  // never hear of each other's messages.
  const storeKind = typeof database === 'object' ? 'custom' : isPostgresUrl(database) ? 'postgresql' : 'sqlite'
  const busKind = options.bus ? 'custom' : options.redis ? 'redis' : 'in-process'
  log.info('relay store and bus', { node, store: storeKind, ...(storeKind === 'sqlite' ? { path: database } : {}), bus: busKind })
  if (storeKind === 'postgresql' && busKind === 'in-process') {
    log.warn('PostgreSQL without Redis: run a single node; nodes sharing the database need --redis to hear of each other\'s messages', { node })
  }
  const app = createRelayApp(core, { staticRoot: options.staticRoot ?? defaultStaticRoot() })
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: limits.maxFrameBytes,
    perMessageDeflate: false,
    // The core keeps its connections; ws's own set added a Set entry and a second 'close'
    // listener (an array) to every socket, ~100 bytes per idle connection.
    clientTracking: false,
  })
  const server = createAdaptorServer({
    fetch: app.fetch,
    // Slowloris: a client must finish its headers in time; checked every second.
    serverOptions: { headersTimeout: limits.headersTimeoutMs, requestTimeout: limits.headersTimeoutMs * 3, connectionsCheckingInterval: 1000 },
  })
  acceptWebSockets(server as Server, wss, core)
  const host = options.host ?? '127.0.0.1'
  /** Everything opened behind the listening socket, given back in order (close, or a failed listen). */
  const release = async () => {
    await core.close()
    await bus.close()
    wss.close()
    await store.close()
    unlock()
    metrics.stop()
  }
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(options.port ?? 8787, host, () => resolve())
    })
  } catch (err) {
    // What was opened is given back: an embedder may try another port in the same process.
    await release()
    throw listenFailure(err, host, options.port ?? 8787)
  }
  const port = (server.address() as AddressInfo).port
  const url = `ws://${host.includes(':') ? `[${host}]` : host}:${port}`
  log.info('relay listening', { url })
  let closing: Promise<void> | undefined
  return {
    url,
    port,
    app,
    metrics,
    store,
    close: () => {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve())
          for (const conn of [...core.connections]) conn.close(CloseCode.Restarting, 'relay restarting')
          // Every socket still open is one whose close the peer has not answered (ws would wait 30 s).
          for (const ws of [...core.closingSockets]) ws.terminate()
          ;(server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.()
        })
        await release()
        log.info('relay closed', {})
      })()
      return closing
    },
  }
}

/** A port that cannot be listened on is the caller's argument to change: said in one line, typed. */
function listenFailure(err: unknown, host: string, port: number): PetrelError {
  const code = (err as NodeJS.ErrnoException)?.code
  const why = code === 'EADDRINUSE' ? 'is in use' : code === 'EACCES' ? 'needs privileges this process lacks' : code === 'EADDRNOTAVAIL' ? 'is not an address of this machine' : `cannot be listened on (${(err as Error)?.message ?? err})`
  return new PetrelError(ErrorCode.InvalidArgument, `port ${port} on ${host} ${why}`, { cause: err })
}

/** `examples/chat/dist` of the nearest package.json above this module (src/ or dist/src/). */
function defaultStaticRoot(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'examples', 'chat', 'dist')
    const parent = dirname(dir)
    if (parent === dir) return undefined
    dir = parent
  }
}

/** A `database` option naming PostgreSQL rather than a SQLite file. */
const isPostgresUrl = (database: string): boolean => /^postgres(ql)?:\/\//.test(database)

async function openStore(database: string | RelayStore): Promise<RelayStore> {
  if (typeof database === 'object') return database
  if (isPostgresUrl(database)) {
    // `?schema=name` picks the schema (default petrel): several deployments, or test runs, can
    // share one database. Loaded on demand, so a SQLite relay never starts the pg driver.
    let url: URL
    try {
      url = new URL(database)
    } catch {
      // Not the URL itself: it holds the password.
      throw new PetrelError(ErrorCode.InvalidArgument, 'the PostgreSQL URL does not parse (postgres://user:password@host:port/database[?schema=name])')
    }
    const schema = url.searchParams.get('schema') ?? undefined
    url.searchParams.delete('schema')
    const { openPostgresRelayStore } = await import('./store/postgres-store.js')
    return openPostgresRelayStore(url.toString(), schema === undefined ? {} : { schema })
  }
  // better-sqlite3 takes '' as a temporary database: every message lost at the next start.
  if (database === '') throw new PetrelError(ErrorCode.InvalidArgument, 'the database path is empty')
  return openSqliteRelayStore(database)
}
