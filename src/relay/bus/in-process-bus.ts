/**
 * A bus inside one process: for a single relay (where it has nobody to ring) and for tests
 * that run several relay nodes in one process on one store.
 */
import { type BusMessage, decodeBusMessage, encodeBusMessage, type FanoutBus } from './fanout-bus.js'

export class InProcessHub {
  readonly members = new Set<(bytes: Uint8Array) => void>()
  connect(node: string): FanoutBus {
    let handler: ((m: BusMessage) => void) | undefined
    const receive = (bytes: Uint8Array) => {
      const m = decodeBusMessage(bytes)
      if (m.node !== node) handler?.(m)
    }
    this.members.add(receive)
    return {
      publish: async (m) => {
        // A relay alone has nobody to ring: its own messages would only be decoded and dropped.
        if (this.members.size === 1 && this.members.has(receive)) return
        const bytes = encodeBusMessage(m)
        // Asynchronous like a real bus, so nobody relies on synchronous delivery.
        for (const member of this.members) queueMicrotask(() => member(bytes))
      },
      subscribe: (h) => {
        handler = h
      },
      onReconnect: () => {},
      ready: () => true,
      close: async () => {
        this.members.delete(receive)
      },
    }
  }
}

/** A bus for one relay alone. */
export const createLocalBus = (node: string): FanoutBus => new InProcessHub().connect(node)
