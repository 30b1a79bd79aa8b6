/**
 * A WebSocket proxy that misbehaves like a bad network, driven by a seeded PRNG: it
 * duplicates, delays (and so reorders) frames in both directions and cuts connections.
 * Fakes the outside world only: both ends are real Petrel clients and a real relay.
 */
import { FrameProxy } from '../integration/frame-proxy.js'

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
  private constructor(
    private readonly proxy: FrameProxy,
    readonly stats: { frames: number; duplicated: number; delayed: number; cut: number },
  ) {}

  static async start(target: () => string, seed: number, options: ChaosOptions): Promise<ChaosProxy> {
    const random = prng(seed)
    const stats = { frames: 0, duplicated: 0, delayed: 0, cut: 0 }
    const proxy = await FrameProxy.start(target, (_to, _data, send, cut) => {
      stats.frames++
      if (random() < options.cut) {
        stats.cut++
        return cut()
      }
      const copies = random() < options.duplicate ? 2 : 1
      if (copies === 2) stats.duplicated++
      for (let i = 0; i < copies; i++) {
        if (random() < options.delay) {
          stats.delayed++
          setTimeout(send, random() * options.maxDelayMs)
        } else send()
      }
    })
    return new ChaosProxy(proxy, stats)
  }

  get url(): string {
    return this.proxy.url
  }

  close(): Promise<void> {
    return this.proxy.close()
  }
}
