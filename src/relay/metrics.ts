/** Counters the relay keeps; exposed for tests and (with the scale-out issue) Prometheus. */
export class RelayMetrics {
  connections = 0
  roomsOpen = 0
  framesIn = 0
  framesOut = 0
  bytesIn = 0
  bytesOut = 0
  rowsStored = 0
  readonly rejected = new Map<string, number>()

  reject(reason: string): void {
    this.rejected.set(reason, (this.rejected.get(reason) ?? 0) + 1)
  }
  rejectedCount(reason?: string): number {
    if (reason !== undefined) return this.rejected.get(reason) ?? 0
    let n = 0
    for (const v of this.rejected.values()) n += v
    return n
  }
}
