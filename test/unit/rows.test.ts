import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import { randomBytes } from '../../src/shared/crypto/index.js'
import { writeRows } from '../../src/shared/room-messages.js'
import { roomFrameHeader, writeRoomFrame } from '../../src/shared/wire.js'
import { encodePage, pageRows, rowsMessage } from '../../src/relay/rows.js'
import type { Row } from '../../src/relay/store/relay-store.js'

/** Rows of a few clients, contiguous per client, in seq order, with numbers of every varUint width. */
function someRows(n: number, seed: number): Row[] {
  const clients = [7, 300, 70_000, 2 ** 31 + seed]
  const next = new Map(clients.map((c, i) => [c, i === 2 ? 20_000 : 0]))
  const rows: Row[] = []
  for (let i = 0; i < n; i++) {
    const client = clients[(i * 7 + seed) % clients.length]!
    const clock = next.get(client)!
    const len = 1 + ((i + seed) % 5)
    next.set(client, clock + len)
    rows.push({ room: 'r', seq: 1 + i * (seed + 1) * 97, client, clock, len, count: len, structs: randomBytes(1 + ((i * 31) % 300)) })
  }
  return rows
}

/** The V1 update of a page written with lib0's encoder, as a reference: one group per client, descending. */
function referenceUpdate(page: Row[]): Uint8Array {
  const byClient = new Map<number, Row[]>()
  for (const r of page) byClient.set(r.client, [...(byClient.get(r.client) ?? []), r])
  const e = encoding.createEncoder()
  const clients = [...byClient.keys()].sort((a, b) => b - a)
  encoding.writeVarUint(e, clients.length)
  for (const client of clients) {
    const rows = byClient.get(client)!
    encoding.writeVarUint(e, rows.reduce((n, r) => n + r.count, 0))
    encoding.writeVarUint(e, client)
    encoding.writeVarUint(e, rows[0]!.clock)
    for (const r of rows) encoding.writeUint8Array(e, r.structs)
  }
  encoding.writeVarUint(e, 0)
  return encoding.toUint8Array(e)
}

describe('rows message', () => {
  it('is byte for byte the rows message of the page encoded as one update', () => {
    for (let seed = 0; seed < 20; seed++) {
      for (const page of pageRows(someRows(60 + seed * 7, seed), 4096)) {
        const index = page.map((r) => ({ seq: r.seq, client: r.client, clock: r.clock, len: r.len }))
        expect(encodePage(page)).toEqual(referenceUpdate(page))
        expect(rowsMessage(page)).toEqual(writeRows(index, encodePage(page)))
      }
    }
  })

  it('built inside its room frame, is byte for byte that message framed for the room, snapshot parts named', () => {
    for (let seed = 0; seed < 20; seed++) {
      const rows = someRows(60 + seed * 7, seed).map((r, i) => (i % 5 === seed % 5 ? { ...r, part: true } : r))
      const room = `room-${'x'.repeat(seed * 13)}`
      for (const page of pageRows(rows, 4096)) {
        const framed = rowsMessage(page, roomFrameHeader(room))
        // Written over memory that is not zeroed first: every byte must be the frame's.
        expect(new Uint8Array(framed)).toEqual(writeRoomFrame(room, rowsMessage(page)))
      }
    }
  })
})
