/**
 * Turning stored rows back into V1 updates without a Yjs decoder: rows of one client that
 * are contiguous in clock concatenate into one struct group; groups go in descending client
 * order (as Yjs writes them); the delete set is empty.
 */
import * as encoding from 'lib0/encoding'
import type { Row } from './store/relay-store.js'

function encodeRuns(runs: Map<number, Row[]>): Uint8Array {
  const e = encoding.createEncoder()
  const clients = [...runs.keys()].sort((a, b) => b - a)
  encoding.writeVarUint(e, clients.length)
  for (const client of clients) {
    const run = runs.get(client)!
    encoding.writeVarUint(e, run.reduce((n, r) => n + r.count, 0))
    encoding.writeVarUint(e, client)
    encoding.writeVarUint(e, run[0]!.clock)
    for (const r of run) encoding.writeUint8Array(e, r.structs)
  }
  encoding.writeVarUint(e, 0)
  return encoding.toUint8Array(e)
}

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

/** Encode a page produced by pageRows as one V1 update. */
export function encodePage(page: Row[]): Uint8Array {
  const runs = new Map<number, Row[]>()
  for (const row of page) {
    const run = runs.get(row.client)
    if (run) run.push(row)
    else runs.set(row.client, [row])
  }
  return encodeRuns(runs)
}
