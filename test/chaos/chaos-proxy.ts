/**
 * A WebSocket proxy that misbehaves like a bad network, driven by a seeded PRNG: it
 * duplicates, delays (and so reorders) frames in both directions and cuts connections.
 * Fakes the outside world only: both ends are real Petrel clients and a real relay.
 */
import type { AddressInfo } from 'node:net'
import { WebSocket, WebSocketServer } from 'ws'

/** mulberry32: small, fast, seeded. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface ChaosOptions {
  duplicate: number
  delay: number
  maxDelayMs: number
  cut: number
}

export class ChaosProxy {
  private readonly wss: WebSocketServer
  readonly stats = { frames: 0, duplicated: 0, delayed: 0, cut: 0 }
  private readonly sockets = new Set<WebSocket>()

  private constructor(
    private readonly target: () => string,
    private readonly random: () => number,
    private readonly options: ChaosOptions,
  ) {
    this.wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
    this.wss.on('connection', (client) => this.pipe(client))
  }

  static async start(target: () => string, seed: number, options: ChaosOptions): Promise<ChaosProxy> {
    const p = new ChaosProxy(target, prng(seed), options)
    await new Promise<void>((resolve) => p.wss.once('listening', () => resolve()))
    return p
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}`
  }

  private pipe(client: WebSocket): void {
    const upstream = new WebSocket(this.target())
    this.sockets.add(client)
    this.sockets.add(upstream)
    const pending: Buffer[] = []
    const close = () => {
      client.terminate()
      upstream.terminate()
      this.sockets.delete(client)
      this.sockets.delete(upstream)
    }
    const forward = (to: WebSocket, data: Buffer) => {
      this.stats.frames++
      const r = this.random()
      if (r < this.options.cut) {
        this.stats.cut++
        return close()
      }
      const send = () => to.readyState === WebSocket.OPEN && to.send(data)
      const copies = this.random() < this.options.duplicate ? 2 : 1
      if (copies === 2) this.stats.duplicated++
      for (let i = 0; i < copies; i++) {
        if (this.random() < this.options.delay) {
          this.stats.delayed++
          setTimeout(send, this.random() * this.options.maxDelayMs)
        } else send()
      }
    }
    upstream.on('open', () => {
      for (const d of pending.splice(0)) forward(upstream, d)
    })
    client.on('message', (data: Buffer) => (upstream.readyState === WebSocket.OPEN ? forward(upstream, data) : pending.push(data)))
    upstream.on('message', (data: Buffer) => forward(client, data))
    client.on('close', close)
    upstream.on('close', close)
    client.on('error', close)
    upstream.on('error', close)
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.terminate()
    await new Promise<void>((resolve) => this.wss.close(() => resolve()))
  }
}
