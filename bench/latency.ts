/**
 * Benchmark 3, latency: one member sends pre-sealed updates at a fixed rate; another member's
 * connection receives them. Each message's latency is from the moment it was handed to the
 * socket to the moment its row arrived at the other member (one process, one clock), which
 * includes the relay's durable commit before fan-out. Reference: the same through a raw `ws`
 * server that forwards without storing.
 */
import type { WebSocket } from 'ws'
import { randomBytes } from '../src/shared/crypto/index.js'
import { openSockets, percentile } from './common.js'
import { roomWithMembers } from './room-members.js'
import { startServer } from './server-process.js'

export interface LatencyResult {
  p50Ms: number
  p99Ms: number
  maxMs: number
  messages: number
}


/**
 * Send `frames` at `rate` per second through `send`; `arrivals` is filled by the receiver in
 * order. The first second is warm-up (JIT, page cache) and is not counted, for either system.
 */
async function paced(frames: Uint8Array[], rate: number, send: (f: Uint8Array) => void, arrivals: number[]): Promise<LatencyResult> {
  const sentAt: number[] = []
  const t0 = performance.now()
  while (sentAt.length < frames.length) {
    const due = Math.min(frames.length, Math.floor(((performance.now() - t0) * rate) / 1000) + 1)
    while (sentAt.length < due) {
      sentAt.push(performance.now())
      send(frames[sentAt.length - 1]!)
    }
    await new Promise((r) => setImmediate(r))
  }
  const deadline = performance.now() + 30_000
  while (arrivals.length < frames.length && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5))
  if (arrivals.length < frames.length) throw new Error(`latency: ${arrivals.length}/${frames.length} arrived`)
  const lat = arrivals.map((t, i) => t - sentAt[i]!).slice(Math.min(rate, frames.length - 1))
  return { p50Ms: percentile(lat, 50), p99Ms: percentile(lat, 99), maxMs: Math.max(...lat), messages: lat.length }
}

export async function latencyPetrel(rate: number, seconds: number, bytes: number): Promise<LatencyResult> {
  const server = await startServer('petrel')
  try {
    const arrivals: number[] = []
    const { room, devices } = await roomWithMembers(server.url, 2, (i) => ({
      onRows: i === 1 ? (n) => {
        const now = performance.now()
        for (let k = 0; k < n; k++) arrivals.push(now)
      } : undefined,
    }))
    const frames = await devices[0]!.sealFrames(room, Math.round(rate * (seconds + 1)), bytes)
    await new Promise((r) => setTimeout(r, 200))
    arrivals.length = 0
    const res = await paced(frames, rate, (f) => devices[0]!.ws.send(f), arrivals)
    for (const d of devices) d.close()
    return res
  } finally {
    await server.stop()
  }
}

export async function latencyRaw(rate: number, seconds: number, bytes: number): Promise<LatencyResult> {
  const server = await startServer('raw-broadcast')
  try {
    const [sender, receiver] = await openSockets(server.url, 2) as [WebSocket, WebSocket]
    const arrivals: number[] = []
    receiver.on('message', () => arrivals.push(performance.now()))
    const frames = Array.from({ length: Math.round(rate * (seconds + 1)) }, () => randomBytes(bytes))
    const res = await paced(frames, rate, (f) => sender.send(f), arrivals)
    sender.terminate()
    receiver.terminate()
    return res
  } finally {
    await server.stop()
  }
}
