/**
 * Benchmark 1, ingest: C connections in C conversations send pre-built 200-byte updates,
 * pipelined; the server stores them and acknowledges. The load generator (this process)
 * builds every frame before the clock starts, so the server, alone on the other core, is
 * what is measured. Petrel acknowledges after fsync (✓ = durable); the raw reference also
 * commits to SQLite before it acks; @y/websocket-server and Hocuspocus run in memory and with
 * their own persistence (the y-websocket barrier is a sync step 2 reply, Hocuspocus's a
 * SyncStatus ack; both answer before they store, so with persistence the time until all is
 * stored is measured too: bench/server-child.ts).
 */
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import { randomBytes } from '../src/shared/crypto/index.js'
import { openSocket as connect } from './common.js'
import { PetrelDevice } from './petrel-device.js'
import { type ServerKind, startServer } from './server-process.js'

export type IngestSystem = 'petrel' | 'raw-sqlite-ack' | 'y-websocket' | 'y-websocket-leveldb' | 'hocuspocus' | 'hocuspocus-sqlite'

export interface IngestResult {
  /** Acknowledged (the system's own barrier) per second. */
  msgsPerSec: number
  elapsedMs: number
  messages: number
  /** For peers that store after acknowledging: stored per second, from the first send until all was stored. */
  durableMsgsPerSec?: number
  durableMs?: number
}

/** Plaintext Yjs updates of `bytes` bytes each, as a y-websocket / Hocuspocus client makes them. */
function plainUpdates(count: number, bytes: number): { updates: Uint8Array[]; stateVector: Uint8Array } {
  const doc = new Y.Doc()
  const updates: Uint8Array[] = []
  doc.on('update', (u: Uint8Array) => updates.push(u))
  const map = doc.getMap<Uint8Array>('log')
  for (let i = 0; i < count; i++) map.set(i.toString(36), randomBytes(bytes))
  return { updates, stateVector: Y.encodeStateVector(doc) }
}

const syncMessage = (prefix: (e: encoding.Encoder) => void, step: number, payload: Uint8Array): Uint8Array => {
  const e = encoding.createEncoder()
  prefix(e)
  encoding.writeVarUint(e, 0)
  encoding.writeVarUint(e, step)
  encoding.writeVarUint8Array(e, payload)
  return encoding.toUint8Array(e)
}

interface Prepared {
  /** Send everything; resolves when every message is acknowledged. */
  run(): Promise<void>
  close(): void
}

async function preparePetrel(url: string, conns: number, perConn: number, bytes: number): Promise<Prepared> {
  let acked = 0
  let done!: () => void
  const all = new Promise<void>((r) => {
    done = r
  })
  const onAck = (n: number) => {
    acked += n
    if (acked >= conns * perConn) done()
  }
  const devices = await Promise.all(Array.from({ length: conns }, () => PetrelDevice.connect(url)))
  const frames: Uint8Array[][] = []
  for (const d of devices) frames.push(await d.sealFrames(await d.createRoom({ onAck }), perConn, bytes))
  return {
    run: async () => {
      for (let i = 0; i < perConn; i++) for (let c = 0; c < conns; c++) devices[c]!.ws.send(frames[c]![i]!)
      await all
    },
    close: () => {
      for (const d of devices) d.close()
    },
  }
}

async function prepareRaw(url: string, conns: number, perConn: number, bytes: number): Promise<Prepared> {
  let acked = 0
  let done!: () => void
  const all = new Promise<void>((r) => {
    done = r
  })
  const sockets = await Promise.all(Array.from({ length: conns }, () => connect(url)))
  for (const ws of sockets)
    ws.on('message', () => {
      if (++acked >= conns * perConn) done()
    })
  const payloads = sockets.map(() => Array.from({ length: perConn }, () => randomBytes(bytes)))
  return {
    run: async () => {
      for (let i = 0; i < perConn; i++) for (let c = 0; c < conns; c++) sockets[c]!.send(payloads[c]![i]!)
      await all
    },
    close: () => {
      for (const ws of sockets) ws.terminate()
    },
  }
}

async function prepareYWebsocket(url: string, conns: number, perConn: number, bytes: number): Promise<Prepared> {
  let synced = 0
  let done!: () => void
  const all = new Promise<void>((r) => {
    done = r
  })
  const sockets = await Promise.all(Array.from({ length: conns }, (_, i) => connect(`${url}/bench-${i}`)))
  const prepared = sockets.map(() => plainUpdates(perConn, bytes))
  const none = () => {}
  for (const ws of sockets)
    ws.on('message', (data: Buffer) => {
      // messageSync (0) + step 2 (1): the answer to our barrier, after every earlier update.
      if (data[0] === 0 && data[1] === 1 && ++synced >= conns) done()
    })
  return {
    run: async () => {
      for (let i = 0; i < perConn; i++) for (let c = 0; c < conns; c++) sockets[c]!.send(syncMessage(none, 2, prepared[c]!.updates[i]!))
      for (let c = 0; c < conns; c++) sockets[c]!.send(syncMessage(none, 0, prepared[c]!.stateVector))
      await all
    },
    close: () => {
      for (const ws of sockets) ws.terminate()
    },
  }
}

async function prepareHocuspocus(url: string, conns: number, perConn: number, bytes: number): Promise<Prepared> {
  let acked = 0
  let done!: () => void
  const all = new Promise<void>((r) => {
    done = r
  })
  const sockets = await Promise.all(Array.from({ length: conns }, () => connect(url)))
  const names = sockets.map((_, i) => `bench-${i}`)
  const prefix = (name: string) => (e: encoding.Encoder) => encoding.writeVarString(e, name)
  for (const [i, ws] of sockets.entries()) {
    const name = names[i]!
    const head = new TextEncoder().encode(name).length + 1
    ws.on('message', (data: Buffer) => {
      // documentName • MessageType.SyncStatus (8): Hocuspocus's acknowledgement of one update.
      if (data[head] === 8 && ++acked >= conns * perConn) done()
    })
    const e = encoding.createEncoder()
    encoding.writeVarString(e, name)
    encoding.writeVarUint(e, 2) // MessageType.Auth
    encoding.writeVarUint(e, 0) // token
    encoding.writeVarString(e, 'bench')
    ws.send(encoding.toUint8Array(e))
  }
  const frames = sockets.map((_, i) => plainUpdates(perConn, bytes).updates.map((u) => syncMessage(prefix(names[i]!), 2, u)))
  return {
    run: async () => {
      for (let i = 0; i < perConn; i++) for (let c = 0; c < conns; c++) sockets[c]!.send(frames[c]![i]!)
      await all
    },
    close: () => {
      for (const ws of sockets) ws.terminate()
    },
  }
}

const preparers: Record<IngestSystem, typeof preparePetrel> = {
  petrel: preparePetrel,
  'raw-sqlite-ack': prepareRaw,
  'y-websocket': prepareYWebsocket,
  'y-websocket-leveldb': prepareYWebsocket,
  hocuspocus: prepareHocuspocus,
  'hocuspocus-sqlite': prepareHocuspocus,
}

/** One round: a fresh server process, prepared load, then the timed run. */
export async function ingestRound(system: IngestSystem, conns: number, perConn: number, bytes: number, timeoutMs: number): Promise<IngestResult> {
  const server = await startServer(system as ServerKind)
  try {
    const load = await preparers[system](server.url, conns, perConn, bytes)
    try {
      const t0 = performance.now()
      let timer: ReturnType<typeof setTimeout> | undefined
      await Promise.race([
        load.run(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${system} ingest timed out after ${timeoutMs} ms`)), timeoutMs)
        }),
      ]).finally(() => clearTimeout(timer))
      const elapsedMs = performance.now() - t0
      const messages = conns * perConn
      const durableAt = await server.durableAt()
      if (durableAt === null) return { msgsPerSec: (messages / elapsedMs) * 1000, elapsedMs, messages }
      const durableMs = durableAt - (performance.timeOrigin + t0)
      return { msgsPerSec: (messages / elapsedMs) * 1000, elapsedMs, messages, durableMs, durableMsgsPerSec: (messages / durableMs) * 1000 }
    } finally {
      load.close()
    }
  } finally {
    await server.stop()
  }
}
