/**
 * Planning `RelayStore.compactRows`, shared by every store so they cannot disagree on which
 * runs merge. Stores read row metadata only (no struct bytes: a room compacted after a
 * snapshot may hold many megabytes), plan here, then delete and insert in one transaction.
 */
import * as encoding from 'lib0/encoding'

/** A Yjs V1 GC struct covering `len` clocks: `uint8(0) • varUint(len)`, as Yjs writes it. */
export function gcStruct(len: number): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 0)
  encoding.writeVarUint(e, len)
  return encoding.toUint8Array(e)
}

/** The longest GC struct: a varUint below 2^53 takes at most 8 bytes. */
export const MAX_GC_BYTES = 9

/** A row as compaction reads it. */
export interface RowMeta {
  seq: number
  client: number
  clock: number
  len: number
  count: number
  /** The struct bytes when count is 1 and they are at most MAX_GC_BYTES long, else null. */
  small: Uint8Array | null
}

export interface CompactionPlan {
  /** Seqs of every row to delete (the seqs GC rows reuse included). */
  remove: number[]
  /** GC rows to insert after the deletes. */
  write: Array<{ seq: number; client: number; clock: number; len: number; count: 1; structs: Uint8Array }>
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i])

/**
 * @param rows the room's rows with seq <= throughSeq, kept ones included (they break runs), in
 * any order.
 */
export function planCompaction(rows: RowMeta[], keep: ReadonlySet<number>): CompactionPlan {
  const byClient = new Map<number, RowMeta[]>()
  for (const r of rows) {
    const list = byClient.get(r.client)
    if (list) list.push(r)
    else byClient.set(r.client, [r])
  }
  const plan: CompactionPlan = { remove: [], write: [] }
  for (const [client, list] of byClient) {
    list.sort((a, b) => a.clock - b.clock)
    let run: RowMeta[] = []
    const flush = (): void => {
      if (run.length === 0) return
      const first = run[0]!
      const last = run.at(-1)!
      const len = last.clock + last.len - first.clock
      const structs = gcStruct(len)
      // Already exactly what it would become: rewriting it would only cost I/O.
      const done = run.length === 1 && first.count === 1 && first.small !== null && sameBytes(first.small, structs)
      if (!done) {
        plan.remove.push(...run.map((r) => r.seq))
        plan.write.push({ seq: run.reduce((m, r) => Math.min(m, r.seq), first.seq), client, clock: first.clock, len, count: 1, structs })
      }
      run = []
    }
    for (const r of list) {
      if (keep.has(r.seq)) {
        flush()
        continue
      }
      const prev = run.at(-1)
      if (prev && prev.clock + prev.len !== r.clock) flush()
      run.push(r)
    }
    flush()
  }
  return plan
}
