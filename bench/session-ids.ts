/**
 * Client ids over sessions: a device starts S times (a new client on the same SQLite store, as
 * an app opened S times), waits for its conversation to catch up with the relay, and sends one
 * message in it each time.
 * Reported: the client ids its stored documents hold afterwards, and Yjs's cost to apply one
 * more single-message update to that inner document, against the same into a document of the
 * same messages written from one id per session (what every session did until the
 * twenty-seventh: a new `Y.Doc` drew a fresh id) — in the same run.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as Y from 'yjs'
import { createClient } from '../src/client/index.js'
import { openSqliteStore } from '../src/client/storage/sqlite-store.js'
import { createRelay } from '../src/relay/index.js'
import { applyCostOn, docWithIds } from './client-ids.js'
import { median } from './common.js'

export interface SessionIdsResult {
  sessions: number
  innerIds: number
  outerIds: number
  /** µs to apply one single-message update into the inner document the sessions left. */
  usPerUpdate: number
  /** The same into a document of as many messages from one id per session. */
  usPerUpdateIdPerSession: number
}

export async function sessionIds(sessions: number, updates = 2000, rounds = 3): Promise<SessionIdsResult> {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-bench-sessions-'))
  const relay = await createRelay({ port: 0, database: join(dir, 'relay.db'), logLevel: 'error' })
  try {
    const storage = join(dir, 'device.db')
    let convId = ''
    for (let s = 0; s < sessions; s++) {
      const client = await createClient({ relay: relay.url, name: 'often', storage })
      const conv = s === 0 ? await client.createConversation({ title: 'daily' }) : (await client.conversations())[0]!
      // Caught up: a session that writes before its first sync keeps the ids it drew.
      await conv.whenSynced(10_000)
      convId = conv.id
      await conv.send(`session ${s}`)
      await client.close()
    }
    const store = await openSqliteStore(storage)
    const load = async (name: 'inner' | 'outer') => {
      const doc = new Y.Doc()
      for (const row of await store.loadLog(convId, name)) Y.applyUpdate(doc, row.bytes)
      return doc
    }
    const [inner, outer] = [await load('inner'), await load('outer')]
    await store.close()
    const innerIds = inner.store.clients.size
    const outerIds = outer.store.clients.size
    const state = Y.encodeStateAsUpdate(inner)
    const ours: number[] = []
    const reference: number[] = []
    // Alternating rounds on fresh copies; the first of all warms the code up and is not kept.
    applyCostOn(docWithIds(sessions), updates)
    for (let r = 0; r < rounds; r++) {
      const copy = new Y.Doc()
      Y.applyUpdate(copy, state)
      ours.push(applyCostOn(copy, updates))
      reference.push(applyCostOn(docWithIds(sessions), updates))
    }
    return { sessions, innerIds, outerIds, usPerUpdate: median(ours), usPerUpdateIdPerSession: median(reference) }
  } finally {
    await relay.close()
    rmSync(dir, { recursive: true, force: true })
  }
}
