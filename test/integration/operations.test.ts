import { afterEach, describe, expect, it } from 'vitest'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { createRelay } from '../../src/relay/index.js'
import { openSqliteRelayStore } from '../../src/relay/store/sqlite-store.js'
import { ErrorCode } from '../../src/shared/errors.js'
import { pair, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

const http = (url: string) => url.replace(/^ws/, 'http')

describe('operating a relay', () => {
  it('answers /healthz, /readyz and /metrics in Prometheus format', async () => {
    world = new World()
    const relay = await world.relay()
    const { aliceConv, bobConv } = await pair(world)
    await aliceConv.send('counted')
    await until(() => texts(bobConv).includes('counted'))
    const health = await fetch(`${http(relay.url)}/healthz`)
    expect(health.status).toBe(200)
    const ready = await fetch(`${http(relay.url)}/readyz`)
    expect(ready.status).toBe(200)
    expect(await ready.json()).toEqual({ ok: true, store: true, bus: true })
    const metrics = await fetch(`${http(relay.url)}/metrics`)
    expect(metrics.headers.get('content-type')).toMatch(/text\/plain/)
    const text = await metrics.text()
    expect(text).toMatch(/^petrel_connections 2$/m)
    expect(text).toMatch(/^petrel_rooms_open 1$/m)
    expect(text).toMatch(/^petrel_frames_in_total\{type="room"\} \d+$/m)
    expect(text).toMatch(/^petrel_rows_stored_total [1-9]\d*$/m)
    expect(text).toMatch(/^petrel_store_seconds_count\{op="append"\} [1-9]\d*$/m)
    expect(text).toContain('petrel_rejected_total')
    expect(text).toContain('petrel_bus_lag_seconds')
  })

  it('serves the app with a policy that refuses framing, sniffing and other origins, and revalidates its shell', async () => {
    // An app root that itself lies under a folder named assets: only the build's own assets/ are immutable.
    const dir = mkdtempSync(join(tmpdir(), 'petrel-app-'))
    const root = join(dir, 'assets', 'app')
    mkdirSync(join(root, 'assets'), { recursive: true })
    writeFileSync(join(root, 'index.html'), '<!doctype html><title>app</title>')
    writeFileSync(join(root, 'sw.js'), 'self.x = 1')
    writeFileSync(join(root, 'assets', 'index-abc.js'), 'export {}')
    world = new World()
    const relay = await world.relay({ staticRoot: root })
    try {
      const shell = await fetch(`${http(relay.url)}/`)
      expect(shell.status).toBe(200)
      expect(shell.headers.get('cache-control')).toBe('no-cache')
      expect(shell.headers.get('x-frame-options')).toBe('DENY')
      expect(shell.headers.get('x-content-type-options')).toBe('nosniff')
      expect(shell.headers.get('referrer-policy')).toBe('no-referrer')
      const csp = shell.headers.get('content-security-policy') ?? ''
      expect(csp).toContain("frame-ancestors 'none'")
      expect(csp).toContain("script-src 'self'")
      expect(csp).toContain("connect-src 'self'")
      expect((await fetch(`${http(relay.url)}/sw.js`)).headers.get('cache-control')).toBe('no-cache')
      expect((await fetch(`${http(relay.url)}/assets/index-abc.js`)).headers.get('cache-control')).toBe('public, max-age=31536000, immutable')
      // The JSON routes carry the same headers.
      expect((await fetch(`${http(relay.url)}/healthz`)).headers.get('x-frame-options')).toBe('DENY')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('serves its landing page (no app built) under a policy that allows only its own inline style', async () => {
    world = new World()
    const relay = await world.relay({ staticRoot: join(world.dir, 'nothing-built') })
    const page = await fetch(`${http(relay.url)}/`)
    expect(await page.text()).toContain('Petrel relay is running')
    expect(page.headers.get('content-security-policy')).toBe("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
  })

  it('writes structured JSON logs with levels and no content', async () => {
    world = new World()
    await world.relay()
    const { aliceConv, bobConv } = await pair(world)
    await aliceConv.send('never logged')
    await until(() => texts(bobConv).includes('never logged'))
    const lines = world.logLines.map((l) => JSON.parse(l) as { level: number; msg: string })
    expect(lines.length).toBeGreaterThan(0)
    for (const line of lines) {
      expect(typeof line.level).toBe('number')
      expect(typeof line.msg).toBe('string')
    }
    expect(world.logLines.join('')).not.toContain('never logged')
    // Which store and bus it runs on, said once at the start.
    expect(lines.filter((l) => l.msg === 'relay store and bus')).toEqual([expect.objectContaining({ store: 'sqlite', path: world.dbPath, bus: 'in-process' })])
  })

  it('shuts down gracefully: clients are told to reconnect (4503) and come back by themselves', async () => {
    world = new World()
    const relay = await world.relay()
    const alice = await world.client('alice')
    await until(() => alice.connection === 'online')
    const t0 = Date.now()
    await relay.close()
    expect(Date.now() - t0).toBeLessThan(2000)
    await until(() => alice.connection === 'connecting')
    expect((await fetch(`${http(world.url)}/healthz`).catch(() => undefined))?.status).toBeUndefined()
    await world.relay()
    await until(() => alice.connection === 'online', 10_000)
  })

  it('refuses limits that are not whole numbers at least 1, and unknown ones, with a typed error', async () => {
    const inherited: object[] = ['constructor', 'toString', 'hasOwnProperty'].map((name) => JSON.parse(`{"${name}":5}`) as object)
    for (const limits of [{ maxFrameBytes: '1mb' }, { maxConnectionsPerIp: null }, { idleTimeoutMs: 0 }, { heartbeatMs: Number.POSITIVE_INFINITY }, { maxFrameByte: 1 }, ...inherited]) {
      await expect(createRelay({ port: 0, database: ':memory:', limits: limits as never }), JSON.stringify(limits)).rejects.toMatchObject({ code: ErrorCode.InvalidArgument })
    }
  })

  it('exits with 2 on a port that is not decimal digits, from the command line or the environment', () => {
    const cli = join(import.meta.dirname, '../../src/relay/cli.ts')
    for (const [args, env] of [
      [['--port', ''], {}],
      [['--port', ' '], {}],
      [['--port', '0x1f91'], {}],
      [['--port', '8.79e3'], {}],
      [['--port', '70000'], {}],
      [[], { PETREL_PORT: 'eighty' }],
    ] as Array<[string[], Record<string, string>]>) {
      const run = spawnSync(process.execPath, ['--import', 'tsx', cli, ...args, '--database', ':memory:'], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 20_000 })
      expect(run.status, JSON.stringify(args)).toBe(2)
      expect(run.stderr).toMatch(/invalid port/)
    }
  })
  it('refuses a port in use with a typed error, and gives back the store it was handed', async () => {
    const first = await createRelay({ port: 0, database: ':memory:', logLevel: 'error' })
    try {
      const store = openSqliteRelayStore(':memory:')
      await expect(createRelay({ port: first.port, database: store, logLevel: 'error' })).rejects.toMatchObject({
        code: ErrorCode.InvalidArgument,
        message: `port ${first.port} on 127.0.0.1 is in use`,
      })
      await expect(store.loadRoom('r')).rejects.toMatchObject({ code: ErrorCode.Closed })
    } finally {
      await first.close()
    }
  })

  it('refuses a database path it cannot open with storage_failed naming the path', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'petrel-ops-'))
    try {
      const notADatabase = join(dir, 'notes.db')
      writeFileSync(notADatabase, 'these are notes, not a database\n'.repeat(100))
      await expect(createRelay({ port: 0, database: notADatabase, logLevel: 'error' })).rejects.toMatchObject({ code: ErrorCode.StorageFailed, message: expect.stringContaining(notADatabase) })
      // A file where a folder should be.
      await expect(createRelay({ port: 0, database: join(notADatabase, 'relay.db'), logLevel: 'error' })).rejects.toMatchObject({ code: ErrorCode.StorageFailed })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('says what went wrong in one line on the command line: an unknown flag (with the usage), a port in use, a database or Redis it cannot open', async () => {
    const cli = join(import.meta.dirname, '../../src/relay/cli.ts')
    const dir = mkdtempSync(join(tmpdir(), 'petrel-ops-'))
    const busy = await createRelay({ port: 0, database: ':memory:', logLevel: 'error' })
    try {
      writeFileSync(join(dir, 'notes.db'), 'not a database\n'.repeat(100))
      const run = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', cli, ...args], { encoding: 'utf8', timeout: 20_000 })
      const unknown = run('--prot', '80')
      expect(unknown.status).toBe(2)
      expect(unknown.stderr.split('\n')[0]).toBe("petrel-relay: Unknown option '--prot'")
      expect(unknown.stderr).toContain('PETREL_DATABASE')
      expect(run('--port').status).toBe(2)
      for (const [args, status, line] of [
        [['--port', String(busy.port), '--database', ':memory:'], 2, `petrel-relay: port ${busy.port} on 127.0.0.1 is in use`],
        [['--port', '0', '--database', join(dir, 'notes.db')], 1, `petrel-relay: relay store: cannot open ${join(dir, 'notes.db')}: file is not a database`],
        [['--port', '0', '--database', ':memory:', '--redis', 'redis://127.0.0.1:1'], 1, 'petrel-relay: cannot reach Redis at redis://127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1'],
      ] as Array<[string[], number, string]>) {
        const r = run(...args)
        expect(r.status, args.join(' ')).toBe(status)
        expect(r.stderr.trim().split('\n'), args.join(' ')).toEqual([line])
      }
      const help = run('--help')
      expect(help.status).toBe(0)
      for (const name of ['PETREL_PORT', 'PETREL_HOST', 'PETREL_DATABASE', 'PETREL_REDIS', 'PETREL_LIMITS', 'PETREL_SPARE_SNAPSHOT_PARTS']) expect(help.stdout).toContain(name)
    } finally {
      await busy.close()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('takes an empty PETREL_DATABASE or PETREL_HOST as unset (the default file, 127.0.0.1), and refuses an empty flag (limits too)', async () => {
    const cli = join(import.meta.dirname, '../../src/relay/cli.ts')
    const dir = mkdtempSync(join(tmpdir(), 'petrel-ops-'))
    try {
      // Before, '' opened a temporary database (every message gone at the next start) and '' listened everywhere.
      // tsx by its path: `--import tsx` resolves from the working directory, here an empty one.
      const tsx = pathToFileURL(join(import.meta.dirname, '../../node_modules/tsx/dist/loader.mjs')).href
      const proc = spawn(process.execPath, ['--import', tsx, cli, '--port', '0'], { cwd: dir, env: { ...process.env, PETREL_DATABASE: '', PETREL_HOST: '', PETREL_REDIS: '' }, stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      proc.stdout.on('data', (d) => (out += d))
      try {
        await until(() => out.includes('Petrel relay on'), 20_000, 'the banner')
        expect(out).toMatch(/^Petrel relay on http:\/\/127\.0\.0\.1:\d+ /m)
        expect(existsSync(join(dir, '.petrel', 'relay.db'))).toBe(true)
      } finally {
        proc.kill('SIGTERM')
        await new Promise((r) => proc.once('exit', r))
      }
      for (const flag of ['--database', '--host', '--redis', '--limits']) {
        const run = spawnSync(process.execPath, ['--import', tsx, cli, '--port', '0', flag, ''], { cwd: dir, encoding: 'utf8', timeout: 20_000 })
        expect(run.status, flag).toBe(2)
        expect(run.stderr.trim(), flag).toBe(`petrel-relay: ${flag} is empty`)
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('says a PostgreSQL URL does not parse in one line, without its password', () => {
    const cli = join(import.meta.dirname, '../../src/relay/cli.ts')
    for (const url of ['postgres://postgres:S3cretPW@127.0.0.1:99999/x', 'postgres://postgres:S3cretPW@bad host/x']) {
      const run = spawnSync(process.execPath, ['--import', 'tsx', cli, '--port', '0', '--database', url], { encoding: 'utf8', timeout: 20_000 })
      expect(run.status, url).toBe(2)
      expect(run.stderr.trim().split('\n'), url).toEqual([expect.stringMatching(/^petrel-relay: the PostgreSQL URL does not parse/)])
      expect(run.stderr + run.stdout).not.toContain('S3cretPW')
    }
  })

  it('shuts down cleanly on SIGTERM when its stdout is gone (piped into a program that exited)', async () => {
    const cli = join(import.meta.dirname, '../../src/relay/cli.ts')
    const dir = mkdtempSync(join(tmpdir(), 'petrel-ops-'))
    try {
      const proc = spawn(process.execPath, ['--import', 'tsx', cli, '--port', '0', '--database', join(dir, 'r.db')], { stdio: ['ignore', 'pipe', 'pipe'] })
      let err = ''
      proc.stderr.on('data', (d) => (err += d))
      let out = ''
      await new Promise<void>((resolve) =>
        proc.stdout.on('data', (d) => {
          out += d
          if (out.includes('Petrel relay on')) resolve()
        }),
      )
      // The reader goes away, as `| head -1` does after its line: the next write fails with EPIPE.
      proc.stdout.destroy()
      proc.kill('SIGTERM')
      const code = await new Promise<number | string | null>((r) => proc.once('exit', (c, sig) => r(c ?? sig)))
      expect({ code, err }).toEqual({ code: 0, err: '' })
      // The store was closed: SQLite folds its write-ahead log back in and removes it.
      expect(existsSync(join(dir, 'r.db-wal'))).toBe(false)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('refuses a second relay on one SQLite file, and takes over the lock of one that died', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'petrel-ops-'))
    const database = join(dir, 'relay.db')
    try {
      const first = await createRelay({ port: 0, database, logLevel: 'error' })
      // Before, both started, and devices on one never heard what the other's sent.
      await expect(createRelay({ port: 0, database, logLevel: 'error' })).rejects.toMatchObject({
        code: ErrorCode.StorageFailed,
        message: expect.stringContaining(`is in use by another relay (process ${process.pid})`),
      })
      await first.close()
      expect(existsSync(`${database}.lock`)).toBe(false)
      // A node killed with its lock left behind: a pid that has exited.
      const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' })
      writeFileSync(`${database}.lock`, `${gone.stdout}\n${hostname()}\n`)
      const again = await createRelay({ port: 0, database, logLevel: 'error' })
      await again.close()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('exits with 2 and one line on limits createRelay refuses', () => {
    const cli = join(import.meta.dirname, '../../src/relay/cli.ts')
    for (const limits of ['{"maxFrameBytes":"1mb"}', '{"maxFrameByte":1}', 'null', '5', '[1]', '"fast"']) {
      const run = spawnSync(process.execPath, ['--import', 'tsx', cli, '--port', '0', '--database', ':memory:', '--limits', limits], { encoding: 'utf8', timeout: 20_000 })
      expect(run.status, limits).toBe(2)
      expect(run.stderr).toMatch(/^petrel-relay: .*limit/)
      expect(run.stderr.trim().split('\n')).toHaveLength(1)
    }
  })
})

describe('a conversation whose reads keep failing at the relay', () => {
  it('is refused for now, on its own: the device’s connection stays up and its other conversations go on', async () => {
    world = new World()
    const disk = openSqliteRelayStore(join(world.dir, 'relay.db'))
    let broken = ''
    // The database of the outside world: one conversation's rows cannot be read back.
    const store = new Proxy(disk, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver)
        if (prop !== 'readRows') return typeof value === 'function' ? value.bind(target) : value
        return (room: string, ...rest: unknown[]) => (room === broken ? Promise.reject(new Error('I/O error reading rows')) : (value as (...a: unknown[]) => unknown).call(target, room, ...rest))
      },
    })
    await world.relay({ database: store })
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    const other = await alice.createConversation({ title: 'other' })
    const bobOther = await bob.join(await other.invite())
    const states: string[] = []
    bob.on('connection', (s) => states.push(s))
    bob.disconnect()
    await until(() => bob.connection === 'offline')
    await aliceConv.send('while bob was away')
    broken = aliceConv.id
    bob.connect()
    await until(() => world.errors.get(bob)!.some((e) => e.message.includes('relay trouble')), 10_000, 'bob told the room is refused for now')
    expect(world.errors.get(bob)!.find((e) => e.message.includes('relay trouble'))).toMatchObject({ code: 'refused', conversationId: bobConv.id })
    await other.send('the other one works')
    await until(() => texts(bobOther).includes('the other one works'), 10_000, 'bob has it')
    await new Promise((r) => setTimeout(r, 1500))
    // One reconnect (ours), no loop of them.
    expect(states.filter((s) => s === 'online')).toHaveLength(1)
    // The disk heals: the conversation comes back by itself.
    broken = ''
    await aliceConv.send('healed')
    await until(() => texts(bobConv).includes('healed'), 40_000, 'bob reads it once the relay can')
  }, 60_000)

  it('keeps a device connected when its conversations cannot be listed, and lists them once the database answers', async () => {
    world = new World()
    const disk = openSqliteRelayStore(join(world.dir, 'relay.db'))
    let down = false
    // The database of the outside world, gone for a while: the listing at each sign-in fails.
    const store = new Proxy(disk, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver)
        if (prop !== 'roomsOfDevice') return typeof value === 'function' ? value.bind(target) : value
        return (...args: unknown[]) => (down ? Promise.reject(new Error('connection terminated')) : (value as (...a: unknown[]) => unknown).apply(target, args))
      },
    })
    await world.relay({ database: store })
    const alice = await world.client('alice')
    const bob = await world.client('bob')
    await until(() => bob.connection === 'online')
    const states: string[] = []
    bob.on('connection', (s) => states.push(s))
    const appeared: string[] = []
    bob.on('conversation', (c) => appeared.push(c.id))
    bob.disconnect()
    // Bob is added while he is away: he learns of it from the listing when he signs in.
    const conv = await alice.createConversation({ title: 'Trip' })
    await conv.addMember(await bob.publicIdentity())
    // Stored at the relay before Bob signs in: an add it took after would reach him live (the
    // relay tells a connected device it was added), not through the listing under test.
    await until(async () => (await disk.roomsOfDevice(bob.deviceId)).includes(conv.id), 10_000, 'the relay holds the add')
    down = true
    bob.connect()
    await until(() => bob.connection === 'online')
    await new Promise((r) => setTimeout(r, 1500))
    expect(appeared).toEqual([])
    // Before, the relay closed the connection (4500) and every device dialled again at once, in a loop.
    expect(states).toEqual(['offline', 'connecting', 'online'])
    down = false
    await until(() => appeared.includes(conv.id), 10_000, 'bob lists the conversation')
    expect(world.logLines.some((l) => l.includes('could not list a device'))).toBe(true)
  }, 30_000)
})
