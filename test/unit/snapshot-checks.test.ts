import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { signMessage } from '../../src/client/message-signature.js'
import type { Put } from '../../src/client/own-messages.js'
import { SnapshotChecks, type SnapshotChecksHost } from '../../src/client/snapshot-checks.js'
import { generateSigningKeyPair, toBase64Url } from '../../src/shared/crypto/index.js'
import { ErrorCode, type PetrelError } from '../../src/shared/errors.js'
import { emptyMembership } from '../../src/shared/membership.js'

const ROOM = 'room-1'
const alice = 'A'.repeat(43)
const device = generateSigningKeyPair()
const deviceId = toBase64Url(device.publicKey)

/** An inner document holding `n` messages of Alice's, each signed alone; `forge` rewrites some after signing. */
async function docWith(n: number, forge: (i: number) => boolean = () => false) {
  const doc = new Y.Doc()
  const messages = doc.getMap<Record<string, unknown>>('messages')
  const ids: string[] = []
  for (let i = 0; i < n; i++) {
    const id = `${alice}.m${String(i).padStart(5, '0')}`
    const m = { t: `message ${i}`, at: 1_700_000_000_000 + i, h: 1_700_000_000_000 + i, n: i, d: deviceId }
    const s = await signMessage(ROOM, id, m, device.secretKey)
    messages.set(id, { ...m, s, ...(forge(i) ? { t: 'forged' } : {}) })
    ids.push(id)
  }
  return { doc, ids }
}

function hostFor(doc: Y.Doc) {
  const membership = emptyMembership(ROOM)
  membership.everDevices.set(deviceId, alice)
  const stored: Put[] = []
  const errors: PetrelError[] = []
  const shown: number[] = []
  const host: SnapshotChecksHost = {
    id: ROOM,
    closed: false,
    inner: doc,
    membership,
    incomingTail: Promise.resolve(),
    storeRow: async (put) => {
      stored.push(put)
    },
    changed: () => shown.push(1),
    reportError: (err) => errors.push(err),
    report: (err) => {
      throw err
    },
  }
  return { host, stored, errors, shown }
}

describe('snapshot checks', () => {
  it('hides a message a snapshot brought until its author’s signature verifies, then shows it', async () => {
    const { doc, ids } = await docWith(3)
    const { host, stored, errors } = hostFor(doc)
    const checks = new SnapshotChecks(host)
    for (const id of ids) checks.hold(id)
    expect(ids.every((id) => checks.hidden(id))).toBe(true)
    await checks.verifySoon()
    expect(ids.some((id) => checks.hidden(id))).toBe(false)
    expect(checks.waiting).toBe(false)
    expect(errors).toEqual([])
    expect(stored).toHaveLength(1)
  })

  it('never shows a message whose text was changed after it was signed, and tells the app once per pass', async () => {
    const { doc, ids } = await docWith(4, (i) => i === 2)
    const { host, errors } = hostFor(doc)
    const checks = new SnapshotChecks(host)
    for (const id of ids) checks.hold(id)
    await checks.verifySoon()
    expect(ids.map((id) => checks.hidden(id))).toEqual([false, false, true, false])
    expect(errors.map((e) => e.code)).toEqual([ErrorCode.EnvelopeRejected])
  })

  it('checks the newest first, a small page before the rest, each page shown as it is checked', async () => {
    const { doc, ids } = await docWith(150)
    const { host, shown } = hostFor(doc)
    const checks = new SnapshotChecks(host)
    for (const id of ids) checks.hold(id)
    let hiddenAfterFirst: boolean[] = []
    host.changed = () => {
      if (shown.push(1) === 1) hiddenAfterFirst = ids.map((id) => checks.hidden(id))
    }
    await checks.verifySoon()
    expect(shown).toHaveLength(2)
    // After the first page, the 100 newest show and the 50 oldest still wait.
    expect(hiddenAfterFirst.slice(0, 50).every(Boolean)).toBe(true)
    expect(hiddenAfterFirst.slice(50).some(Boolean)).toBe(false)
  })

  it('stores what still waits and what failed, so a restart resumes and never shows a failed one', async () => {
    const { doc, ids } = await docWith(3, (i) => i === 0)
    const { host, stored } = hostFor(doc)
    const checks = new SnapshotChecks(host)
    for (const id of ids) checks.hold(id)
    // A received batch stores the state as it stands, once.
    const row = checks.takeRow()
    expect(row).toBeDefined()
    expect(checks.takeRow()).toBeUndefined()
    const restarted = new SnapshotChecks(hostFor(doc).host)
    restarted.load(row![1]!)
    expect(restarted.waiting).toBe(true)
    await checks.verifySoon()
    const after = new SnapshotChecks(hostFor(doc).host)
    after.load(stored.at(-1)![1]!)
    expect(after.waiting).toBe(false)
    expect(ids.map((id) => after.hidden(id))).toEqual([true, false, false])
  })
})
