/**
 * A WebSocket proxy between devices and a relay, for tests that fake the network: each frame,
 * either way, goes to a policy that sends it, holds it, sends it twice or cuts the connection.
 * Both ends stay real (Petrel clients, a real relay).
 */
import type { AddressInfo } from 'node:net'
import { WebSocket, WebSocketServer } from 'ws'

/**
 * What becomes of one frame: `send` passes it on (any number of times, at any moment; given
 * other bytes, it sends those instead, on the same connection), `cut` closes both sides of its
 * connection. `to` is the side it is going to.
 */
export type FramePolicy = (to: 'relay' | 'device', data: Buffer, send: (instead?: Uint8Array) => void, cut: () => void) => void

export class FrameProxy {
  private readonly sockets = new Set<WebSocket>()

  private constructor(
    private readonly wss: WebSocketServer,
    private readonly target: () => string,
    private readonly policy: FramePolicy,
  ) {
    // The device's path and query go on to the relay (a client asks for features in it).
    wss.on('connection', (device, request) => this.pipe(device, request.url ?? '/'))
  }

  /** `target`: the relay's URL, asked again for every connection (a restarted relay may move). */
  static async start(target: () => string, policy: FramePolicy): Promise<FrameProxy> {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
    await new Promise<void>((resolve) => wss.once('listening', () => resolve()))
    return new FrameProxy(wss, target, policy)
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}`
  }

  private pipe(device: WebSocket, path: string): void {
    const relay = new WebSocket(new URL(path, this.target()).href)
    this.sockets.add(device)
    this.sockets.add(relay)
    const pending: Buffer[] = []
    const cut = () => {
      device.terminate()
      relay.terminate()
      this.sockets.delete(device)
      this.sockets.delete(relay)
    }
    const toRelay = (data: Buffer) => this.policy('relay', data, (instead) => relay.readyState === WebSocket.OPEN && relay.send(instead ?? data), cut)
    relay.on('open', () => {
      for (const data of pending.splice(0)) toRelay(data)
    })
    device.on('message', (data: Buffer) => (relay.readyState === WebSocket.OPEN ? toRelay(data) : pending.push(data)))
    relay.on('message', (data: Buffer) => this.policy('device', data, (instead) => device.readyState === WebSocket.OPEN && device.send(instead ?? data), cut))
    device.on('close', cut)
    relay.on('close', cut)
    device.on('error', cut)
    relay.on('error', cut)
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.terminate()
    await new Promise<void>((resolve) => this.wss.close(() => resolve()))
  }
}
