/**
 * Benchmark 2, fan-out: one conversation, N member connections; one member sends M pre-sealed
 * updates and every other member receives each. Deliveries per second, against a raw `ws`
 * broadcast server that frames each message once and writes it to corked sockets.
 */
import { randomBytes } from '../src/shared/crypto/index.js'
import { openSockets } from './common.js'
import { roomWithMembers } from './room-members.js'
import { startServer } from './server-process.js'

export interface FanoutResult {
  deliveriesPerSec: number
  elapsedMs: number
  deliveries: number
  /** Server CPU time during the run, ms. */
  serverCpuMs: number
}

function waitAll(expected: number): { add: (n: number) => void; done: Promise<void> } {
  let got = 0
  let resolve!: () => void
  const done = new Promise<void>((r) => {
    resolve = r
  })
  return {
    add: (n) => {
      got += n
      if (got >= expected) resolve()
    },
    done,
  }
}

export async function fanoutPetrel(members: number, messages: number, bytes: number): Promise<FanoutResult> {
  const server = await startServer('petrel')
  try {
    const expected = messages * (members - 1)
    const counter = waitAll(expected)
    let counting = false
    const { room, devices } = await roomWithMembers(server.url, members, (i) => ({ onRows: i === 0 ? undefined : (n) => counting && counter.add(n) }))
    const frames = await devices[0]!.sealFrames(room, messages, bytes)
    // Let the join traffic settle before the clock starts.
    await new Promise((r) => setTimeout(r, 500))
    counting = true
    const cpu0 = await server.cpuMs()
    const t0 = performance.now()
    for (const f of frames) devices[0]!.ws.send(f)
    await counter.done
    const elapsedMs = performance.now() - t0
    const serverCpuMs = (await server.cpuMs()) - cpu0
    for (const d of devices) d.close()
    return { deliveriesPerSec: (expected / elapsedMs) * 1000, elapsedMs, deliveries: expected, serverCpuMs }
  } finally {
    await server.stop()
  }
}

export async function fanoutRaw(members: number, messages: number, bytes: number): Promise<FanoutResult> {
  const server = await startServer('raw-broadcast')
  try {
    const expected = messages * (members - 1)
    const counter = waitAll(expected)
    const sockets = await openSockets(server.url, members)
    for (const ws of sockets.slice(1)) ws.on('message', () => counter.add(1))
    const payloads = Array.from({ length: messages }, () => randomBytes(bytes))
    const cpu0 = await server.cpuMs()
    const t0 = performance.now()
    for (const p of payloads) sockets[0]!.send(p)
    await counter.done
    const elapsedMs = performance.now() - t0
    const serverCpuMs = (await server.cpuMs()) - cpu0
    for (const ws of sockets) ws.terminate()
    return { deliveriesPerSec: (expected / elapsedMs) * 1000, elapsedMs, deliveries: expected, serverCpuMs }
  } finally {
    await server.stop()
  }
}
