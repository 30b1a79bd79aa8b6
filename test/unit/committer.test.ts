import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { Committer } from '../../src/relay/committer.js'
import type { AppendBatch } from '../../src/relay/store/relay-store.js'
import { openSqliteRelayStore } from '../../src/relay/store/sqlite-store.js'

const rowsOf = (room: string, client: number, from: number, n: number): AppendBatch => ({
  rows: Array.from({ length: n }, (_, i) => ({ room, client, clock: from + i, len: 1, count: 1, structs: Uint8Array.of(1, from + i) })),
  bindings: [],
  records: [],
})

describe('committer', () => {
  it('refuses what queued behind a failed commit for the same room, and stores what queued for other rooms', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'petrel-committer-'))
    // The writer thread: commits are truly in flight while more arrives.
    const store = openSqliteRelayStore(join(dir, 'relay.db'), { writer: 'thread' })
    try {
      await store.createRoom('room-other-000001', new Uint8Array([1]), 1)
      await store.createRoom('room-ghost-000001', new Uint8Array([1]), 1)
      const committer = new Committer(store)
      const outcome = (batch: AppendBatch) =>
        new Promise<string>((resolve) => committer.add(batch, (seqs) => resolve(`stored ${seqs.join(',')}`), (err) => resolve(`failed: ${(err as Error).message}`)))
      // The first commit fails on disk: it also carries a row for a room the store never
      // created, and the store refuses the whole transaction.
      const ghostAndNowhere = rowsOf('room-ghost-000001', 7, 0, 2)
      ghostAndNowhere.rows.push(...rowsOf('room-nowhere-0001', 8, 0, 1).rows)
      const first = outcome(ghostAndNowhere)
      await new Promise((r) => setImmediate(r))
      // While it is in flight: the same room's next rows (clocks 2–3, which follow the failed
      // ones), and another room's.
      const sameRoom = outcome(rowsOf('room-ghost-000001', 7, 2, 2))
      const otherRoom = outcome(rowsOf('room-other-000001', 9, 0, 1))
      expect(await first).toMatch(/^failed/)
      expect(await sameRoom).toMatch(/^failed/)
      expect(await otherRoom).toBe('stored 1')
      // Nothing of the failed room was stored: no gap for a resend to fall into.
      expect(await store.readRows('room-ghost-000001', 0, 10)).toEqual([])
    } finally {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
