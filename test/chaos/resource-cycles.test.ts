/**
 * Resource cycles leave the relay where it started: connections that come and go, and
 * conversations opened and closed, release their memory and timers.
 * CI: PETREL_CYCLES (default 2,000) connections and 500 conversations; `npm run soak`: 10,000 and 1,000.
 */
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { afterEach, describe, expect, it } from 'vitest'
import { PUBLIC_KEY_CACHE_LIMIT } from '../../src/shared/crypto/index.js'
import { FrameType, writeFrame } from '../../src/shared/wire.js'
import { openNewRoom, rawDevice, until, World } from '../integration/harness.js'

const CONNECTIONS = Number(process.env.PETREL_CYCLES ?? 2_000)
const ROOMS = Number(process.env.PETREL_ROOM_CYCLES ?? 500)
let world: World
afterEach(async () => {
  await world?.close()
})

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

async function settledHeap(): Promise<number> {
  for (let i = 0; i < 4; i++) {
    await new Promise((r) => setTimeout(r, 50))
    gc()
  }
  return process.memoryUsage().heapUsed
}

describe('resource cycles', () => {
  it(`${CONNECTIONS} connect/disconnects and ${ROOMS} conversations opened and closed leave memory where it started`, async () => {
    world = new World()
    const relay = await world.relay({ logLevel: 'error' })
    // Warm up code paths and fill the bounded caches (verified public keys: PUBLIC_KEY_CACHE_LIMIT)
    // first, so the baseline is not the cold start.
    for (let i = 0; i < PUBLIC_KEY_CACHE_LIMIT + 100; i += 20) {
      for (const d of await Promise.all(Array.from({ length: 20 }, () => rawDevice(world.url)))) d.ws.close()
    }
    await until(() => relay.metrics.connections === 0)
    const before = await settledHeap()
    for (let i = 0; i < CONNECTIONS; i += 20) {
      const batch = await Promise.all(Array.from({ length: 20 }, () => rawDevice(world.url)))
      for (const d of batch) d.ws.close()
    }
    await until(() => relay.metrics.connections === 0, 10_000, 'all connections gone')
    const dev = await rawDevice(world.url)
    for (let i = 0; i < ROOMS; i++) {
      const room = await openNewRoom(dev)
      dev.ws.send(writeFrame({ type: FrameType.Close, room }))
    }
    await until(() => relay.metrics.roomsOpen === 0, 10_000, 'rooms released')
    dev.ws.close()
    await until(() => relay.metrics.connections === 0)
    const after = await settledHeap()
    const growth = after - before
    console.log(
      `resource cycles: ${CONNECTIONS} connections, ${ROOMS} conversations; heap ${(before / 1e6).toFixed(1)} MB → ${(after / 1e6).toFixed(1)} MB (${(growth / 1024).toFixed(0)} KiB)`,
    )
    // Within noise: well under 1 KiB per cycle (a leaked connection or room costs several KiB).
    expect(growth).toBeLessThan(Math.max(2 * 1024 * 1024, (CONNECTIONS + ROOMS) * 256))
    expect(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length).toBeLessThan(50)
  }, 300_000)
})
