/**
 * Turning stored rows back into V1 updates without a Yjs decoder: rows of one client that
 * are contiguous in clock concatenate into one struct group; groups go in descending client
 * order (as Yjs writes them); the delete set is empty.
 */
import { putVarUint, varUintLength } from '../shared/lib0-strict.js'
import { RoomMessage } from '../shared/room-messages.js'
import type { Row } from './store/relay-store.js'

/** Page rows so that each page encodes as exactly one valid update. */
export function pageRows(rows: Row[], maxBytes: number): Row[][] {
  const pages: Row[][] = []
  let page: Row[] = []
  let size = 0
  const lastOf = new Map<number, Row>()
  for (const row of rows) {
    const prev = lastOf.get(row.client)
    const breaks = prev !== undefined && prev.clock + prev.len !== row.clock
    if (page.length > 0 && (breaks || size + row.structs.length > maxBytes)) {
      pages.push(page)
      page = []
      size = 0
      lastOf.clear()
    }
    page.push(row)
    size += row.structs.length + 8
    lastOf.set(row.client, row)
  }
  if (page.length > 0) pages.push(page)
  return pages
}

/** A page's rows grouped into one run per client, clients in descending order (as Yjs writes them). */
interface Runs {
  clients: number[]
  runs: Map<number, { count: number; rows: Row[] }>
  /** Bytes of the V1 update they make. */
  updateBytes: number
}

function runsOf(page: Row[]): Runs {
  const runs = new Map<number, { count: number; rows: Row[] }>()
  for (const row of page) {
    const run = runs.get(row.client)
    if (run) {
      run.rows.push(row)
      run.count += row.count
    } else runs.set(row.client, { count: row.count, rows: [row] })
  }
  const clients = [...runs.keys()].sort((a, b) => b - a)
  let updateBytes = varUintLength(clients.length) + 1
  for (const client of clients) {
    const run = runs.get(client)!
    updateBytes += varUintLength(run.count) + varUintLength(client) + varUintLength(run.rows[0]!.clock)
    for (const r of run.rows) updateBytes += r.structs.length
  }
  return { clients, runs, updateBytes }
}

/** Writes the V1 update of `r` at `at`; returns the position after it. */
function writeUpdate(out: Uint8Array, at: number, r: Runs): number {
  at = putVarUint(out, at, r.clients.length)
  for (const client of r.clients) {
    const run = r.runs.get(client)!
    at = putVarUint(out, at, run.count)
    at = putVarUint(out, at, client)
    at = putVarUint(out, at, run.rows[0]!.clock)
    for (const row of run.rows) {
      out.set(row.structs, at)
      at += row.structs.length
    }
  }
  // An empty delete set.
  out[at++] = 0
  return at
}

/** Encode a page produced by pageRows as one V1 update. */
export function encodePage(page: Row[]): Uint8Array {
  const r = runsOf(page)
  const out = new Uint8Array(r.updateBytes)
  writeUpdate(out, 0, r)
  return out
}

/**
 * `writeRows(index of page, encodePage(page))` built in one allocation of its exact size: a
 * catch-up sends megabytes of rows, and the encoders' growth and copies (struct bytes copied
 * four times over) were ~85 ms of the relay's 136 ms for a 10,000-message catch-up.
 *
 * With `prefix` (a room frame's header, `roomFrameHeader`), the result is the whole frame,
 * `prefix • message`, in a Buffer that ws sends as it is: wrapping the message in its frame
 * afterwards copied every page once more into fresh memory (18 of the relay's 77 ms of a
 * 10,000-message catch-up, thirtieth session).
 */
export function rowsMessage(page: Row[], prefix?: Uint8Array): Uint8Array {
  const r = runsOf(page)
  let indexBytes = 0
  for (const row of page) indexBytes += varUintLength(row.seq) + varUintLength(row.client) + varUintLength(row.clock) + varUintLength(row.len)
  // Rows uploaded as snapshot parts, named after the update (older clients ignore the rest).
  let parts = 0
  let partBytes = 0
  for (const row of page) {
    if (!row.part) continue
    parts++
    partBytes += varUintLength(row.seq)
  }
  const trailer = parts === 0 ? 0 : varUintLength(parts) + partBytes
  const messageBytes = varUintLength(RoomMessage.Rows) + varUintLength(page.length) + indexBytes + varUintLength(r.updateBytes) + r.updateBytes + trailer
  // Not zeroed (a frame's worth of fresh memory is written once, below); every byte is
  // written, which the length check at the end holds to: no byte of old memory leaves.
  const out = prefix ? Buffer.allocUnsafeSlow(prefix.length + messageBytes) : new Uint8Array(messageBytes)
  let at = 0
  if (prefix) {
    out.set(prefix)
    at = prefix.length
  }
  at = putVarUint(out, at, RoomMessage.Rows)
  at = putVarUint(out, at, page.length)
  for (const row of page) {
    at = putVarUint(out, at, row.seq)
    at = putVarUint(out, at, row.client)
    at = putVarUint(out, at, row.clock)
    at = putVarUint(out, at, row.len)
  }
  at = putVarUint(out, at, r.updateBytes)
  at = writeUpdate(out, at, r)
  if (parts > 0) {
    at = putVarUint(out, at, parts)
    for (const row of page) if (row.part) at = putVarUint(out, at, row.seq)
  }
  if (at !== out.length) throw new Error(`rows message: wrote ${at} of ${out.length} bytes`)
  return out
}
