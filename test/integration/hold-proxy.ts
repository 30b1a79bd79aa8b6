/**
 * A proxy between one device and a real relay that can hold back the rows the relay sends the
 * device while letting everything else through: the ✓ for the device's own writes then
 * arrives before rows the relay stored earlier, as it does when rows stored by another relay
 * node reach this one later than its own acks (scale-out). Fakes the network only.
 */
import { RoomMessage } from '../../src/shared/room-messages.js'
import { FrameType, readFrame } from '../../src/shared/wire.js'
import { FrameProxy } from './frame-proxy.js'

export class HoldProxy {
  private holding = false
  private readonly held: Array<() => void> = []

  private constructor(private readonly proxy: FrameProxy) {}

  static async start(target: string): Promise<HoldProxy> {
    let self: HoldProxy | undefined
    const proxy = await FrameProxy.start(
      () => target,
      (to, data, send) => {
        if (to === 'device' && self?.holding && isRows(data)) self.held.push(send)
        else send()
      },
    )
    self = new HoldProxy(proxy)
    return self
  }

  get url(): string {
    return this.proxy.url
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

  close(): Promise<void> {
    return this.proxy.close()
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
