/**
 * Group commit: every append that arrives in one event-loop turn goes to the store in one
 * transaction, and each caller hears back only once its rows are durable — ✓ must mean
 * "on disk", and one transaction per message measured ~3× slower. While a commit is in flight
 * (on the store's writer thread, or a database server), what arrives waits and goes in the next
 * one: one commit at a time, each as large as the traffic makes it.
 */
import type { AppendBatch, RelayStore } from './store/relay-store.js'

interface Pending {
  batch: AppendBatch
  /** Runs when the batch is taken for a commit: after it, the batch may no longer change. */
  taken?: () => void
  /** Runs once durable, with the sequence numbers the store gave `batch.rows`. */
  done: (seqs: number[]) => void
  failed: (err: unknown) => void
}

export class Committer {
  private queue: Pending[] = []
  private scheduled = false
  private busy = false
  private inflight: Promise<void> = Promise.resolve()

  constructor(
    private readonly store: RelayStore,
    private readonly observe: (seconds: number) => void = () => {},
  ) {}

  /**
   * Queue a batch; `done` runs after it is durable, in enqueue order. Until `taken` runs (the
   * batch goes into a commit), its caller may still grow it.
   */
  add(batch: AppendBatch, done: (seqs: number[]) => void, failed: (err: unknown) => void, taken?: () => void): void {
    this.queue.push({ batch, done, failed, taken })
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(() => this.flush())
    }
  }

  /** Resolves when everything queued so far is durable (or failed). */
  idle(): Promise<void> {
    if (this.queue.length === 0) return this.inflight
    return new Promise((resolve) => this.add({ rows: [], bindings: [], records: [] }, () => resolve(), () => resolve()))
  }

  private flush(): void {
    this.scheduled = false
    // The commit in flight flushes again when it is done.
    if (this.busy) return
    const items = this.queue
    this.queue = []
    if (items.length === 0) return
    const merged: AppendBatch = { rows: [], bindings: [], records: [] }
    for (const p of items) {
      p.taken?.()
      merged.records.push(...p.batch.records)
      merged.bindings.push(...p.batch.bindings)
      merged.rows.push(...p.batch.rows)
      if (p.batch.devices) {
        merged.devices ??= []
        merged.devices.push(...p.batch.devices)
      }
      if (p.batch.receipts) {
        merged.receipts ??= []
        merged.receipts.push(...p.batch.receipts)
      }
      if (p.batch.refusals) {
        merged.refusals ??= []
        merged.refusals.push(...p.batch.refusals)
      }
    }
    this.busy = true
    this.inflight = this.commit(items, merged).finally(() => {
      this.busy = false
      if (this.queue.length > 0) this.flush()
    })
  }

  private async commit(items: Pending[], merged: AppendBatch): Promise<void> {
    let seqs: number[] = []
    try {
      if (merged.rows.length + merged.bindings.length + merged.records.length + (merged.receipts?.length ?? 0) + (merged.devices?.length ?? 0) > 0) {
        const t0 = performance.now()
        seqs = await this.store.append(merged)
        this.observe((performance.now() - t0) / 1000)
      }
    } catch (err) {
      for (const p of items) p.failed(err)
      // What queued behind the failed commit for the same rooms was checked against clocks
      // the failed batch claimed: stored, it would leave a gap the clients' resends could
      // never fill (the relay would count them as duplicates). Refused with it instead; the
      // clients still hold everything unacknowledged and resend it.
      const rooms = roomsOf(merged)
      const later = this.queue
      this.queue = []
      for (const p of later) {
        if ([...roomsOf(p.batch)].some((room) => rooms.has(room))) p.failed(err)
        else this.queue.push(p)
      }
      return
    }
    let at = 0
    for (const p of items) {
      p.done(seqs.slice(at, at + p.batch.rows.length))
      at += p.batch.rows.length
    }
  }
}

function roomsOf(batch: AppendBatch): Set<string> {
  const rooms = new Set<string>()
  for (const r of batch.rows) rooms.add(r.room)
  for (const b of batch.bindings) rooms.add(b.room)
  for (const r of batch.records) rooms.add(r.room)
  for (const r of batch.receipts ?? []) rooms.add(r.room)
  for (const d of batch.devices ?? []) rooms.add(d.room)
  return rooms
}
