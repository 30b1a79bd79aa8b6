import { afterEach, describe, expect, it } from 'vitest'
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
})
