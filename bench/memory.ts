/**
 * Benchmark 7, relay memory: N idle authenticated connections, R of them with a conversation
 * open each, against a raw `ws` server holding the same number of connections. Bytes per
 * connection = growth of the server process's resident set (after a full GC) / N.
 */
import type { WebSocket } from 'ws'
import { openSockets } from './common.js'
import { PetrelDevice } from './petrel-device.js'
import { type ServerProcess, startServer } from './server-process.js'

export interface MemoryResult {
  bytesPerConn: number
  heapBytesPerConn: number
  connections: number
  rooms: number
}

export async function memoryPetrel(connections: number, rooms: number): Promise<MemoryResult> {
  const server = await startServer('petrel')
  const devices: PetrelDevice[] = []
  try {
    return await perConnection(server, connections, rooms, async () => {
      for (let i = 0; i < connections; i += 200) {
        devices.push(...(await Promise.all(Array.from({ length: Math.min(200, connections - i) }, () => PetrelDevice.connect(server.url)))))
      }
      for (let i = 0; i < rooms; i += 100) await Promise.all(devices.slice(i, Math.min(rooms, i + 100)).map((d) => d.createRoom()))
    })
  } finally {
    for (const d of devices) d.close()
    await server.stop()
  }
}

export async function memoryRaw(connections: number): Promise<MemoryResult> {
  const server = await startServer('raw-idle')
  const sockets: WebSocket[] = []
  try {
    return await perConnection(server, connections, 0, async () => {
      sockets.push(...(await openSockets(server.url, connections, 200)))
    })
  } finally {
    for (const ws of sockets) ws.terminate()
    await server.stop()
  }
}

/**
 * The raw server again, its connections having carried Petrel's handshake frames (one
 * 200-byte frame up, three small ones down): what traffic alone leaves behind in a connection.
 */
export async function memoryRawHandshake(connections: number): Promise<MemoryResult> {
  const server = await startServer('raw-handshake')
  const sockets: WebSocket[] = []
  try {
    return await perConnection(server, connections, 0, async () => {
      sockets.push(...(await openSockets(server.url, connections, 200)))
      const auth = Buffer.alloc(200, 4)
      for (let i = 0; i < sockets.length; i += 200) {
        await Promise.all(
          sockets.slice(i, i + 200).map(
            (ws) =>
              new Promise<void>((resolve) => {
                let n = 0
                ws.on('message', () => {
                  if (++n === 2) resolve()
                })
                ws.send(auth)
              }),
          ),
        )
      }
    })
  } finally {
    for (const ws of sockets) ws.terminate()
    await server.stop()
  }
}

/**
 * V8 gives back young-generation and spare old-space pages only after a few idle seconds
 * (its memory reducer): read half a second after the connections opened, every server's
 * figure carried ~3 KB per connection of pages it was about to release, which made them all
 * look alike. Both readings are taken once the process has been idle this long.
 */
const SETTLE_MS = Number(process.env.BENCH_MEMORY_SETTLE_MS ?? 8000)

/** The server's growth (after a full GC, each reading after SETTLE_MS idle), per connection. */
async function perConnection(server: ServerProcess, connections: number, rooms: number, open: () => Promise<void>): Promise<MemoryResult> {
  await server.memory()
  await new Promise((r) => setTimeout(r, SETTLE_MS))
  const before = await server.memory()
  await open()
  await server.memory()
  await new Promise((r) => setTimeout(r, SETTLE_MS))
  const after = await server.memory()
  return {
    bytesPerConn: (after.rss - before.rss) / connections,
    heapBytesPerConn: (after.heapUsed + after.external - before.heapUsed - before.external) / connections,
    connections,
    rooms,
  }
}
