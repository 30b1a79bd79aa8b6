/**
 * A WebSocket proxy between one device and a real relay that can hold back the rows the relay
 * sends the device while letting everything else through: the ✓ for the device's own writes
 * then arrives before rows the relay stored earlier, as it does when rows stored by another
 * relay node reach this one later than its own acks (scale-out). Fakes the network only.
 */
import type { AddressInfo } from 'node:net'
import { WebSocket, WebSocketServer } from 'ws'
import { RoomMessage } from '../../src/shared/room-messages.js'
import { FrameType, readFrame } from '../../src/shared/wire.js'

export class HoldProxy {
  private readonly wss: WebSocketServer
  private readonly sockets = new Set<WebSocket>()
  private holding = false
  private readonly held: Array<() => void> = []

  private constructor(private readonly target: string) {
    this.wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
    this.wss.on('connection', (client) => this.pipe(client))
  }

  static async start(target: string): Promise<HoldProxy> {
    const p = new HoldProxy(target)
    await new Promise<void>((resolve) => p.wss.once('listening', () => resolve()))
    return p
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}`
  }

  /** Rows frames held back so far. */
  get heldRows(): number {
    return this.held.length
  }

  /** From now on, rows frames to the device wait until {@link release}; other frames pass. */
  holdRows(): void {
    this.holding = true
  }

  /** Deliver the held rows, in the order the relay sent them, and stop holding. */
  release(): void {
    this.holding = false
    for (const send of this.held.splice(0)) send()
  }

  private pipe(client: WebSocket): void {
    const upstream = new WebSocket(this.target)
    this.sockets.add(client)
    this.sockets.add(upstream)
    const pending: Buffer[] = []
    const close = () => {
      client.terminate()
      upstream.terminate()
      this.sockets.delete(client)
      this.sockets.delete(upstream)
    }
    upstream.on('open', () => {
      for (const d of pending.splice(0)) upstream.send(d)
    })
    client.on('message', (data: Buffer) => (upstream.readyState === WebSocket.OPEN ? upstream.send(data) : pending.push(data)))
    upstream.on('message', (data: Buffer) => {
      const send = () => client.readyState === WebSocket.OPEN && client.send(data)
      if (this.holding && isRows(data)) this.held.push(send)
      else send()
    })
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

function isRows(data: Buffer): boolean {
  try {
    const frame = readFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
    return frame.type === FrameType.Room && frame.message[0] === RoomMessage.Rows
  } catch {
    return false
  }
}
