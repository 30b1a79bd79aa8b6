/**
 * The relay's counters, kept as plain numbers (tests read them) and exported in Prometheus
 * text format through prom-client at GET /metrics. One registry per relay, so several relays
 * in one process do not share numbers.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'

export class RelayMetrics {
  connections = 0
  roomsOpen = 0
  framesIn = 0
  framesOut = 0
  bytesIn = 0
  bytesOut = 0
  rowsStored = 0
  /** Snapshot-part rows sent as a placeholder (to live devices, or in a catch-up that asked), and the struct bytes that spared them. */
  partsSpared = 0
  partBytesSpared = 0
  readonly rejected = new Map<string, number>()
  readonly registry = new Registry()
  private readonly rejectedCounter: Counter<'reason'>
  readonly framesInByType: Counter<'type'>
  readonly storeLatency: Histogram<'op'>
  readonly busLag: Histogram

  constructor() {
    const r = this.registry
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({ name, help, registers: [r], collect: function (this: Gauge) {
        this.set(read())
      } })
    gauge('petrel_connections', 'Open WebSocket connections', () => this.connections)
    gauge('petrel_rooms_open', 'Conversations loaded on this node', () => this.roomsOpen)
    const counter = (name: string, help: string, read: () => number) =>
      new Counter({ name, help, registers: [r], collect: function (this: Counter) {
        this.reset()
        this.inc(read())
      } })
    counter('petrel_frames_out_total', 'Frames sent', () => this.framesOut)
    counter('petrel_bytes_in_total', 'Bytes received', () => this.bytesIn)
    counter('petrel_bytes_out_total', 'Bytes sent', () => this.bytesOut)
    counter('petrel_rows_stored_total', 'Rows stored durably', () => this.rowsStored)
    counter('petrel_snapshot_parts_spared_total', 'Snapshot-part rows sent as a placeholder (live, or in a catch-up)', () => this.partsSpared)
    counter('petrel_snapshot_part_bytes_spared_total', 'Struct bytes those placeholders stood in for', () => this.partBytesSpared)
    this.framesInByType = new Counter({ name: 'petrel_frames_in_total', help: 'Frames received, by frame type', labelNames: ['type'], registers: [r] })
    this.rejectedCounter = new Counter({ name: 'petrel_rejected_total', help: 'Frames, updates and requests refused, by reason', labelNames: ['reason'], registers: [r] })
    this.storeLatency = new Histogram({
      name: 'petrel_store_seconds',
      help: 'Store operation latency',
      labelNames: ['op'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [r],
    })
    this.loopDelay.enable()
    gauge('petrel_event_loop_delay_max_seconds', 'Largest event-loop delay since start', () => this.loopDelay.max / 1e9)
    gauge('petrel_event_loop_delay_p99_seconds', 'Event-loop delay, 99th percentile since start', () => this.loopDelay.percentile(99) / 1e9)
    this.busLag = new Histogram({
      name: 'petrel_bus_lag_seconds',
      help: 'From a bus doorbell to the rows being fanned out on this node',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers: [r],
    })
  }

  /** The relay's own event-loop delay (a stall shows as a large max). */
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 10 })

  /** Largest event-loop delay seen since start, in ms. */
  get eventLoopMaxMs(): number {
    return this.loopDelay.max / 1e6
  }

  stop(): void {
    this.loopDelay.disable()
  }

  reject(reason: string): void {
    this.rejected.set(reason, (this.rejected.get(reason) ?? 0) + 1)
    this.rejectedCounter.inc({ reason })
  }

  rejectedCount(reason?: string): number {
    if (reason !== undefined) return this.rejected.get(reason) ?? 0
    let n = 0
    for (const v of this.rejected.values()) n += v
    return n
  }

  /** Prometheus text exposition. */
  render(): Promise<string> {
    return this.registry.metrics()
  }
}
