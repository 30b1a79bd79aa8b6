/**
 * The snapshot writer decides when this device writes a history snapshot and writes it: parts
 * sealed under the current key into the outer log, the signed record with the last part. These
 * specs run it against real documents, a real identity, real sealing and signing, and open what
 * it wrote as another device would. (Encoded in place here: the replica thread has specs of its
 * own, history-replica.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import * as Y from 'yjs'
import type { ClientContext } from '../../src/client/client-context.js'
import { setHistoryReplicas } from '../../src/client/history-replica.js'
import { loadOrCreateIdentity } from '../../src/client/identity.js'
import { SnapshotSource } from '../../src/client/snapshot-source.js'
import { type SnapshotHost, SnapshotWriter } from '../../src/client/snapshot-writer.js'
import { openSqliteStore } from '../../src/client/storage/sqlite-store.js'
import { randomBytes, randomKey, signWithDomain } from '../../src/shared/crypto/index.js'
import { openEnvelope, readEnvelope } from '../../src/shared/envelope.js'
import type { MembershipState } from '../../src/shared/membership.js'
import { OUTER_LOG, OUTER_RECORDS } from '../../src/shared/outer-keys.js'
import { domainOf, encodeRecord, readRecord, readSnapshotBody, RecordKind, recordSigningPayload, roomIdFor } from '../../src/shared/records.js'
import { historyKeys, inflateSnapshot, openSnapshot } from '../../src/shared/snapshot-seal.js'
import { dependentUpdates } from '../fixtures/yjs-docs.js'

beforeAll(() => setHistoryReplicas(false))
afterAll(() => setHistoryReplicas(true))

/**
 * A conversation of 40 messages at relay row 100, snapshots every `compactEvery` updates, and
 * other member devices with the rows they said they stored.
 */
async function setup(options: { compactEvery?: number; others?: Array<[device: string, stored: number]> } = {}) {
  const store = await openSqliteStore(':memory:')
  const identity = await loadOrCreateIdentity(store)
  await store.close()
  const room = roomIdFor(randomBytes(16), identity.userPub)
  const inner = new Y.Doc()
  const messages = inner.getMap<{ t: string }>('messages')
  for (let i = 0; i < 40; i++) messages.set(`m${i}`, { t: `message ${i}` })
  const outer = new Y.Doc()
  const keys = new Map<number, Uint8Array>([[0, randomKey()]])
  const state = { epoch: 0, cursor: 100 }
  const stored = new Map(options.others ?? [])
  const devices = new Map<string, string>([[identity.deviceId, identity.userId], ...[...stored.keys()].map((d): [string, string] => [d, 'another person'])])
  const membership = { devices, snapshot: undefined } as unknown as MembershipState
  const reported: unknown[] = []
  const host: SnapshotHost = {
    id: room,
    ctx: {
      compactEvery: options.compactEvery ?? 5,
      identity,
      connection: { maxEnvelopeBytes: 256 * 1024 },
      signRecord: async (kind: RecordKind, body: Uint8Array) =>
        encodeRecord(kind, body, identity.certificate.bytes, await signWithDomain(domainOf(kind), identity.deviceSecret, recordSigningPayload(kind, body))),
    } as unknown as ClientContext,
    inner,
    outer,
    closed: false,
    membership,
    get epoch() {
      return state.epoch
    },
    epochKeys: keys,
    get cursor() {
      return state.cursor
    },
    get coverableThrough() {
      return state.cursor
    },
    storedBy: (device) => stored.get(device) ?? 0,
    incomingSettled: async () => {},
    outgoing: Promise.resolve(),
    afterOutgoing: async (job) => job(),
    writeOuter: (fn) => {
      const updates: Uint8Array[] = []
      const capture = (u: Uint8Array) => updates.push(u)
      outer.on('update', capture)
      try {
        outer.transact(() => fn(outer.getMap(OUTER_LOG), outer.getMap(OUTER_RECORDS)))
      } finally {
        outer.off('update', capture)
      }
      return updates
    },
    storeOuter: async () => {},
    idsTaken: async () => {},
    foldRecords: async () => {},
    refusedTombstones: () => [],
    ready: async () => {},
    assertOpen: () => {},
    report: (err) => reported.push(err),
  }
  const writer = new SnapshotWriter(host, new SnapshotSource(async () => [Y.encodeStateAsUpdate(inner)]))
  return { writer, host, inner, outer, keys, state, stored, reported, room }
}

type Setup = Awaited<ReturnType<typeof setup>>

/** The snapshot records in the outer log, and the state their parts open to, as another device reads them. */
async function written({ outer, keys, room }: Setup) {
  const records = [...outer.getMap<Uint8Array>(OUTER_RECORDS).values()].map((r) => readRecord(r)).filter((r) => r.kind === RecordKind.Snapshot)
  const parts: Array<{ epoch: number; part: number; parts: number; bytes: Uint8Array }> = []
  for (const bytes of outer.getMap<Uint8Array>(OUTER_LOG).values()) {
    const header = readEnvelope(bytes)
    const opened = openEnvelope(room, header, keys.get(header.epoch)!)
    if (opened.kind === 'snapshot') parts.push({ epoch: header.epoch, part: opened.part, parts: opened.parts, bytes: opened.bytes })
  }
  parts.sort((a, b) => a.part - b.part)
  let state: Uint8Array | undefined
  if (parts.length > 0) {
    const sealed = new Uint8Array(parts.reduce((n, p) => n + p.bytes.length, 0))
    let at = 0
    for (const p of parts) {
      sealed.set(p.bytes, at)
      at += p.bytes.length
    }
    const epoch = parts[0]!.epoch
    state = await inflateSnapshot(openSnapshot(sealed, room, epoch, historyKeys(keys, epoch)!))
  }
  return { records: records.map((r) => readSnapshotBody(r.body)), parts, state }
}

const messagesIn = (state: Uint8Array) => {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, state)
  return doc.getMap('messages').toJSON()
}

describe('snapshot writer', () => {
  it('writes once a send crosses the mark: sealed parts, the signed record with the last, opening to the document', async () => {
    const conv = await setup({ compactEvery: 5 })
    conv.writer.counted(4, true)
    await new Promise((r) => setTimeout(r, 50))
    expect((await written(conv)).records).toEqual([])
    conv.writer.counted(1, true)
    await vi.waitFor(async () => expect((await written(conv)).records).toHaveLength(1))
    await conv.writer.close()
    const { records, parts, state } = await written(conv)
    expect(records[0]!.coversSeq).toBe(100)
    expect(records[0]!.parts).toBe(parts.length)
    expect(messagesIn(state!)).toEqual(conv.inner.getMap('messages').toJSON())
    expect(conv.reported).toEqual([])
  })

  it('leaves it to senders: updates received only count', async () => {
    const conv = await setup({ compactEvery: 5 })
    conv.writer.counted(50, false)
    await new Promise((r) => setTimeout(r, 100))
    expect((await written(conv)).records).toEqual([])
  })

  it('waits while another member device is far behind, and writes once its receipts catch up', async () => {
    const conv = await setup({ compactEvery: 5, others: [['laptop', 10]] })
    conv.writer.counted(5, true)
    await new Promise((r) => setTimeout(r, 100))
    expect((await written(conv)).records).toEqual([])
    // Half of what came since the last snapshot (none: rows 1–100) is enough.
    conv.stored.set('laptop', 60)
    conv.writer.receiptsMoved()
    await vi.waitFor(async () => expect((await written(conv)).records).toHaveLength(1))
  })

  it('gives up when the key changes while it is sealed, and writes again under the new key', async () => {
    const conv = await setup({ compactEvery: 5 })
    let rotated = false
    conv.host.afterOutgoing = async (job) => {
      if (!rotated) {
        // Another device rotated: epoch 1 arrives before the first part is written.
        rotated = true
        conv.keys.set(1, randomKey())
        conv.state.epoch = 1
      }
      return job()
    }
    conv.writer.counted(5, true)
    await vi.waitFor(async () => expect((await written(conv)).records).toHaveLength(1), { timeout: 5_000 })
    const { parts, state } = await written(conv)
    // Nothing of the given-up one: every part is under the new key.
    expect(new Set(parts.map((p) => p.epoch))).toEqual(new Set([1]))
    expect(messagesIn(state!)).toEqual(conv.inner.getMap('messages').toJSON())
  })

  it('writes nothing while Yjs holds updates back for missing history (their rows would be compacted away)', async () => {
    const conv = await setup({ compactEvery: 5 })
    Y.applyUpdate(conv.inner, dependentUpdates()[1])
    await conv.writer.write()
    const { records, parts } = await written(conv)
    expect(records).toEqual([])
    expect(parts).toEqual([])
  })
})
