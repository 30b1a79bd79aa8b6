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

const { values } = parseArgs({
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

if (values.help) {
  process.stdout.write('petrel-relay [--port 8787] [--host 127.0.0.1] [--database ./.petrel/relay.db | postgres://…] [--redis redis://…] [--limits JSON] [--no-spare-snapshot-parts]\n')
  process.exit(0)
}

// Digits only: Number('') and Number(' ') are 0 (a random port), and '0x1f91' or '8.79e3' are
// ports nobody meant. An empty PETREL_PORT is as good as none.
const portText = values.port ?? (process.env.PETREL_PORT || undefined) ?? '8787'
const port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`petrel-relay: invalid port ${values.port ?? process.env.PETREL_PORT}\n`)
  process.exit(2)
}
let limits: Record<string, number> | undefined
const limitsText = values.limits ?? process.env.PETREL_LIMITS
if (limitsText) {
  try {
    limits = JSON.parse(limitsText) as Record<string, number>
  } catch {
    process.stderr.write('petrel-relay: --limits / PETREL_LIMITS must be JSON, e.g. {"maxFrameBytes":1048576}\n')
    process.exit(2)
  }
}
// A limit createRelay refuses (not a whole number ≥ 1, or unknown) is a usage error like a bad
// port: said in one line, exit 2, not a stack trace.
const relay = await createRelay({
  limits,
  port,
  host: values.host ?? process.env.PETREL_HOST ?? '127.0.0.1',
  database: values.database ?? process.env.PETREL_DATABASE ?? './.petrel/relay.db',
  redis: values.redis ?? process.env.PETREL_REDIS,
  spareSnapshotParts: !(values['no-spare-snapshot-parts'] ?? process.env.PETREL_SPARE_SNAPSHOT_PARTS === '0'),
}).catch((err: unknown) => {
  if (!isPetrelError(err, ErrorCode.InvalidArgument)) throw err
  process.stderr.write(`petrel-relay: ${err.message}\n`)
  process.exit(2)
})
process.stdout.write(`Petrel relay on ${relay.url.replace(/^ws/, 'http')} (WebSocket ${relay.url})\n`)

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
