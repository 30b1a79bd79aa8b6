/**
 * Benchmark 3's pacer and its counted part, shared by the full clients (latency-clients.ts) and
 * the floor (latency-floor.ts), so both are paced, counted and measured alike: texts `#i` and
 * 80 characters, sent at a fixed rate from a 1-ms timer; the first `warmupSeconds` not counted;
 * CPU read from the first counted send until the receiving device has every message.
 */
import { percentile, wallNow } from './common.js'
import { describeThreadTimes, ownThreadId, readThreadTimes, type ThreadTime } from './thread-times.js'

/** What both kinds of devices report of a round. */
export interface PacedLatency {
  p50Ms: number
  p99Ms: number
  maxMs: number
  messages: number
  /** Every counted message's latency (ms), for pooling rounds. */
  latencies: number[]
  /**
   * CPU over the counted part (from the first counted send until the receiving device has them
   * all), in µs per counted message: both devices' process (every thread: the two devices, their
   * SQLite writers and history copies, V8's own) and the relay's. A steadier figure than the
   * tail on a machine whose rounds differ several-fold: it shows a change in cost through it.
   */
  deviceCpuUsPerMessage: number
  relayCpuUsPerMessage: number
  /** Cores busy on average over the counted part, devices and relay together. */
  coresBusy: number
}

export class PacedSends {
  /** When each text was sent (`wallNow`, one clock for every thread of the process). */
  readonly sentAt: Float64Array
  /** The first counted text. */
  readonly from: number
  private counted: { at: number; cpu: NodeJS.CpuUsage; relayMs: Promise<number> } | undefined
  private threadsAtCount: Map<number, ThreadTime> | undefined
  private readonly threadNames = new Map<number, string>()
  private result: { deviceCpuMs: number; relayCpuMs: number; countedMs: number } | undefined

  constructor(
    private readonly rate: number,
    readonly total: number,
    warmupSeconds: number,
    /** The relay's CPU so far, in ms (a `ServerProcess`). */
    private readonly server: { cpuMs(): Promise<number> },
    /** The receiving worker's Linux thread id (its 'ready' says it), to name it for BENCH_THREADS. */
    receiverTid?: number,
  ) {
    this.sentAt = new Float64Array(total)
    this.from = Math.min(Math.round(rate * warmupSeconds), total - 1)
    const mainTid = ownThreadId()
    if (mainTid !== undefined) this.threadNames.set(mainTid, 'the sending device (main thread)')
    if (receiverTid !== undefined) this.threadNames.set(receiverTid, 'the receiving device (its worker)')
  }

  /**
   * Sends every text at the rate: `send` for each, then `tick(last)` once a tick's are sent.
   * A timer, not setImmediate: a pacer that spins burns the core the other device and the
   * relay need (0.9 s of CPU in a 4-second run at 10,000/s). Sends come ~10 per millisecond
   * tick at 10,000/s, as a UI's come per frame; latency is timed from each send.
   */
  async run(send: (text: string) => void, tick?: (last: boolean) => void): Promise<void> {
    const pad = 'x'.repeat(80)
    let sent = 0
    const t0 = performance.now()
    while (sent < this.total) {
      const due = Math.min(this.total, Math.floor(((performance.now() - t0) * this.rate) / 1000) + 1)
      if (this.counted === undefined && due > this.from) {
        this.counted = { at: performance.now(), cpu: process.cpuUsage(), relayMs: this.server.cpuMs() }
        // BENCH_THREADS=1: each thread's CPU and its wait for a core over the counted part (thread-times.ts).
        if (process.env.BENCH_THREADS) this.threadsAtCount = readThreadTimes()
      }
      while (sent < due) {
        this.sentAt[sent] = wallNow()
        send(`#${sent} ${pad}`)
        sent++
      }
      tick?.(sent === this.total)
      await new Promise((r) => setTimeout(r, 1))
    }
  }

  /** Ends the counted part: call once the receiving device has every message, before it closes. */
  async stop(label: string): Promise<void> {
    const counted = this.counted!
    const cpu = process.cpuUsage(counted.cpu)
    if (this.threadsAtCount) console.log(`THREADS (${label}) at ${this.rate}/s, counted part:\n  ${describeThreadTimes(this.threadsAtCount, readThreadTimes(), this.threadNames).join('\n  ')}`)
    const countedMs = performance.now() - counted.at
    const relayCpuMs = (await this.server.cpuMs()) - (await counted.relayMs)
    this.result = { deviceCpuMs: (cpu.user + cpu.system) / 1000, relayCpuMs, countedMs }
  }

  /** Each counted message's latency: the receiver's `arrivedAt[i]` (wallNow) less its send. */
  latencies(arrivedAt: Float64Array): number[] {
    const lat: number[] = []
    for (let i = this.from; i < this.total; i++) lat.push(arrivedAt[i]! - this.sentAt[i]!)
    return lat
  }

  /** The round's figures from its latencies (after `stop`). */
  summary(lat: number[]): PacedLatency {
    const { deviceCpuMs, relayCpuMs, countedMs } = this.result!
    return {
      p50Ms: percentile(lat, 50),
      p99Ms: percentile(lat, 99),
      maxMs: lat.reduce((a, b) => Math.max(a, b), 0),
      messages: lat.length,
      latencies: lat,
      deviceCpuUsPerMessage: (deviceCpuMs * 1000) / lat.length,
      relayCpuUsPerMessage: (relayCpuMs * 1000) / lat.length,
      coresBusy: (deviceCpuMs + relayCpuMs) / countedMs,
    }
  }
}
