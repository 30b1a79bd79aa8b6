/**
 * Rows from the relay (room-messages.ts `rows`), applied to a conversation's outer document.
 * The relay is untrusted: before Yjs sees the rows, their update is parsed and must hold only
 * what the outer log is made of (envelopes and records, as binary map entries) and no
 * deletions. Then it integrates in one transaction that Yjs does not encode again (the rows are
 * stored as received, see quiet-transact.ts), and the caller learns which log and record keys
 * came in: including entries of earlier rows that waited in Yjs for their predecessors, which
 * are new now, not when their message came.
 */
import * as Y from 'yjs'
import { findRun } from '../shared/clock-ranges.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { OUTER_LOG, OUTER_RECORDS } from '../shared/outer-keys.js'
import type { RowIndexEntry } from '../shared/room-messages.js'
import { applyUpdate } from '../shared/update-reader.js'
import { parseUpdate } from '../shared/yjs-v1.js'
import { transactWithoutUpdate } from './quiet-transact.js'

/** One `rows` message as read off the wire. */
export interface RowsMessage {
  /** Which row (seq) holds which range of ids, for the items in `update`. */
  index: RowIndexEntry[]
  /** The rows' outer updates, merged. */
  update: Uint8Array
  /** Seqs of rows uploaded as snapshot parts. */
  parts: number[]
}

/** What `checkRows` found in rows it accepted. */
export interface CheckedRows {
  /** The writers (client ids) whose structs the rows hold. */
  clients: number[]
  /**
   * Seqs of rows the relay compacted away (garbage-collected placeholders) whose content the
   * document never held: history to take from a snapshot. Only while catching up: live, a
   * placeholder is a refused write, not history; and never a part's row, which the relay
   * spared this device.
   */
  compacted: number[]
}

/**
 * Throws a typed `Malformed` error unless the rows only add envelopes and records (a parse
 * failure is one too); nothing is applied then.
 *
 * @example
 * ```ts
 * const { clients, compacted } = checkRows(msg, outer, !provider.synced)
 * for (const seq of compacted) missing.compactedRow(seq)
 * ```
 */
export function checkRows(msg: RowsMessage, outer: Y.Doc, catchingUp: boolean): CheckedRows {
  const parsed = parseUpdate(msg.update, { maxBytes: msg.update.length })
  if (parsed.deleteSet.length > 0) throw new PetrelError(ErrorCode.Malformed, 'rows may not delete')
  // The index names the rows of this update, each inside its client's run: a relay's entry for
  // clocks the update does not hold would wait in the cursor for good (row-cursor.ts).
  const runs = new Map<number, { from: number; to: number }>()
  for (const g of parsed.groups) {
    const last = g.structs[g.structs.length - 1]!
    runs.set(g.client, { from: g.structs[0]!.clock, to: last.clock + last.len })
  }
  for (const row of msg.index) {
    const run = runs.get(row.client)
    if (!run || row.len === 0 || row.clock < run.from || row.clock + row.len > run.to) {
      throw new PetrelError(ErrorCode.Malformed, `rows index names clocks ${row.client}:${row.clock}+${row.len} the update does not hold`)
    }
  }
  const compacted: number[] = []
  let rows: RowLocator | undefined
  let parts: Set<number> | undefined
  for (const g of parsed.groups)
    for (const s of g.structs) {
      if (s.kind === 'gc') {
        if (catchingUp && s.clock + s.len > Y.getState(outer.store, g.client)) {
          rows ??= new RowLocator(msg.index)
          parts ??= new Set(msg.parts)
          const seq = rows.seqAt(g.client, s.clock)
          if (seq !== undefined && !parts.has(seq)) compacted.push(seq)
        }
        continue
      }
      if (s.kind !== 'item' || s.contentRef !== 3 || (s.parentRoot !== OUTER_LOG && s.parentRoot !== OUTER_RECORDS)) {
        throw new PetrelError(ErrorCode.Malformed, 'rows hold something other than envelopes and records')
      }
    }
  return { clients: parsed.groups.map((g) => g.client), compacted }
}

/** What applying one `rows` message did to the outer document. */
export interface AppliedRows {
  /** Keys of `OUTER_RECORDS` integrated by this apply, in the order Yjs reported them. */
  recordKeys: string[]
  /** Keys of `OUTER_LOG` integrated by this apply. */
  logKeys: string[]
  /** Whether Yjs skipped encoding the transaction (quiet-transact.ts); `encoded` is then undefined. */
  quiet: boolean
  /** Yjs's encoding of what integrated, when it made one. */
  encoded: Uint8Array | undefined
  /** Whether anything integrated, or now waits in Yjs for predecessors: rows that added nothing need not be stored again. */
  added: boolean
}

/**
 * Apply rows `checkRows` accepted (`clients` from its answer) to `outer` with `origin` (the
 * provider, so y-websocket does not echo them back to the relay). `ours`: the document's own
 * `'update'` listeners, which do not need Yjs's encoding of received rows.
 *
 * @example
 * ```ts
 * const { clients } = checkRows(msg, outer, !provider.synced)
 * const { logKeys, recordKeys } = applyRows(outer, msg.update, clients, provider, [outerListener, provider._updateHandler])
 * ```
 */
export function applyRows(outer: Y.Doc, update: Uint8Array, clients: readonly number[], origin: unknown, ours: Iterable<unknown>): AppliedRows {
  const recordKeys: string[] = []
  const logKeys: string[] = []
  const onRec = (event: Y.YMapEvent<Uint8Array>) => {
    for (const k of event.keysChanged) recordKeys.push(k)
  }
  const onLog = (event: Y.YMapEvent<Uint8Array>) => {
    for (const k of event.keysChanged) logKeys.push(k)
  }
  const rec = outer.getMap<Uint8Array>(OUTER_RECORDS)
  const log = outer.getMap<Uint8Array>(OUTER_LOG)
  rec.observe(onRec)
  log.observe(onLog)
  let encoded: Uint8Array | undefined
  const capture = (bytes: Uint8Array, from: unknown) => {
    if (from === origin) encoded = bytes
  }
  outer.on('update', capture)
  const before = clients.map((client) => Y.getState(outer.store, client))
  let quiet = false
  try {
    quiet = transactWithoutUpdate(outer, origin, new Set([capture, ...ours]), () => true, () => applyUpdate(outer, update, origin), false)
  } finally {
    outer.off('update', capture)
    rec.unobserve(onRec)
    log.unobserve(onLog)
  }
  const added = clients.some((client, i) => Y.getState(outer.store, client) !== before[i]) || outer.store.pendingStructs !== null
  return { recordKeys, logKeys, quiet, encoded, added }
}

/**
 * Which row of a `rows` index holds an outer item: the entries of each client sorted by clock,
 * found by binary search. A linear search per item was quadratic in a page: a hostile relay's
 * 469 KB message of 40,000 placeholders and 100,000 entries took 5.9 s.
 *
 * @example
 * ```ts
 * const rows = new RowLocator(msg.index)
 * const seq = rows.seqOfKey(envelopeKey(client, clock))
 * ```
 */
export class RowLocator {
  private readonly byClient = new Map<number, RowIndexEntry[]>()

  constructor(index: readonly RowIndexEntry[]) {
    for (const row of index) {
      const rows = this.byClient.get(row.client)
      if (rows) rows.push(row)
      else this.byClient.set(row.client, [row])
    }
    for (const rows of this.byClient.values()) rows.sort((a, b) => a.clock - b.clock)
  }

  /** The seq of the row holding (client, clock), if indexed. */
  seqAt(client: number, clock: number): number | undefined {
    return findRun(this.byClient.get(client), clock)?.seq
  }

  /** The seq of the row holding the outer item behind `key` (an id-derived key), if indexed. */
  seqOfKey(key: string): number | undefined {
    const dot = key.indexOf('.')
    return this.seqAt(Number.parseInt(key.slice(0, dot), 36), Number.parseInt(key.slice(dot + 1), 36))
  }
}
