#!/usr/bin/env node
/**
 * petrel-relay [--port 8787] [--host 127.0.0.1] [--database ./.petrel/relay.db | postgres://…] [--redis redis://…]
 *   [--limits '{"framesPerSecond":1000}'] [--no-spare-snapshot-parts]
 * Environment: PETREL_PORT, PETREL_HOST, PETREL_DATABASE, PETREL_REDIS, PETREL_LIMITS,
 * PETREL_SPARE_SNAPSHOT_PARTS=0 (flags win). --no-spare-snapshot-parts: RelayOptions.spareSnapshotParts false.
 */
import { parseArgs } from 'node:util'
import { createRelay } from './relay.js'
import { ErrorCode, isPetrelError } from '../shared/errors.js'

const USAGE = `petrel-relay [--port 8787] [--host 127.0.0.1] [--database ./.petrel/relay.db | postgres://…] [--redis redis://…] [--limits JSON] [--no-spare-snapshot-parts]

  --port N                   port to listen on; 0 picks a free one          PETREL_PORT (8787)
  --host ADDRESS             address to listen on; 0.0.0.0 for every one     PETREL_HOST (127.0.0.1)
  --database PATH | URL      a SQLite file, or postgres://…[?schema=name]     PETREL_DATABASE (./.petrel/relay.db)
  --redis URL                fan-out between nodes (with PostgreSQL)         PETREL_REDIS
  --limits JSON              limits over the defaults, e.g. '{"maxFrameBytes":1048576}'   PETREL_LIMITS
  --no-spare-snapshot-parts  send live members snapshot parts too           PETREL_SPARE_SNAPSHOT_PARTS=0
  -h, --help                 this text

Flags win over the environment. docs/OPERATING.md has the rest.
`

// Stdout closed (piped into `head`, a log shipper gone): what is lost is a banner, not a reason to
// die before the store is closed.
process.stdout.on('error', () => undefined)

/** A password in a URL, hidden: messages go to logs (journald, a terminal scrollback). */
const redact = (text: string): string => text.replace(/(\/\/[^/\s:@]*):[^@\s/]*@/g, '$1:***@')

/** An environment variable, or undefined when unset or empty (systemd's `Environment=X=`, compose's `${X:-}`). */
const env = (name: string): string | undefined => process.env[name] || undefined

const fail = (message: string, code: number): never => {
  process.stderr.write(`petrel-relay: ${message}\n`)
  process.exit(code)
}

// An unknown flag, or one missing its value: one line and the usage, not a stack trace.
const { values } = (() => {
  try {
    return parseArgs({
      options: {
        port: { type: 'string' },
        host: { type: 'string' },
        database: { type: 'string' },
        redis: { type: 'string' },
        limits: { type: 'string' },
        'no-spare-snapshot-parts': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (err) {
    process.stderr.write(`petrel-relay: ${(err as Error).message}\n\n${USAGE}`)
    process.exit(2)
  }
})()

if (values.help) {
  process.stdout.write(USAGE)
  process.exit(0)
}

// Digits only: Number('') and Number(' ') are 0 (a random port), and '0x1f91' or '8.79e3' are
// ports nobody meant. An empty PETREL_PORT is as good as none.
const portText = values.port ?? (process.env.PETREL_PORT || undefined) ?? '8787'
const port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  fail(`invalid port ${values.port ?? process.env.PETREL_PORT}`, 2)
}
// Empty means unset, as for the port: an empty database was a temporary one (every message lost
// at the next start), an empty host every interface, empty limits silently the defaults.
for (const flag of ['host', 'database', 'redis', 'limits'] as const) if (values[flag] === '') fail(`--${flag} is empty`, 2)
let limits: Record<string, number> | undefined
const limitsText = values.limits ?? env('PETREL_LIMITS')
if (limitsText) {
  try {
    limits = JSON.parse(limitsText) as Record<string, number>
  } catch {
    fail('--limits / PETREL_LIMITS must be JSON, e.g. {"maxFrameBytes":1048576}', 2)
  }
}
const relay = await createRelay({
  limits,
  port,
  host: values.host ?? env('PETREL_HOST') ?? '127.0.0.1',
  database: values.database ?? env('PETREL_DATABASE') ?? './.petrel/relay.db',
  redis: values.redis ?? env('PETREL_REDIS'),
  spareSnapshotParts: !(values['no-spare-snapshot-parts'] ?? process.env.PETREL_SPARE_SNAPSHOT_PARTS === '0'),
}).catch((err: unknown) =>
  // A bad limit or a port in use is a usage error (2); a database or Redis that cannot be
  // opened or reached, or a database from a newer version, is the machine's (1). Either is one
  // line, not a stack trace.
  isPetrelError(err, ErrorCode.InvalidArgument)
    ? fail(redact(err.message), 2)
    : fail(redact(isPetrelError(err) ? err.message : `could not start: ${(err as Error)?.message ?? String(err)}`), 1),
)

let stopping = false
const stop = (signal: string) => {
  if (stopping) return
  stopping = true
  process.stdout.write(`petrel-relay: ${signal}, shutting down\n`)
  const bound = setTimeout(() => process.exit(1), 10_000)
  bound.unref()
  relay.close().then(
    () => process.exit(0),
    () => process.exit(1),
  )
}
process.on('SIGINT', () => stop('SIGINT'))
process.on('SIGTERM', () => stop('SIGTERM'))
// Said once it can be stopped cleanly: a supervisor that signals as soon as it reads the banner
// (stdout to a pipe is written at once) found no handler yet, and the store was not closed.
process.stdout.write(`Petrel relay on ${relay.url.replace(/^ws/, 'http')} (WebSocket ${relay.url})\n`)

