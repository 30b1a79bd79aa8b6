import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { recordAllowance } from '../../src/relay/limits.js'
import { validateOuterUpdate } from '../../src/relay/outer-update.js'
import { generateSigningKeyPair, toBase64Url } from '../../src/shared/crypto/index.js'
import { sealEnvelope } from '../../src/shared/envelope.js'
import { envelopeKey, OUTER_LOG, OUTER_RECORDS } from '../../src/shared/outer-keys.js'
import { Reason } from '../../src/shared/wire.js'
import { writeAs } from '../fixtures/sealed-outbox.js'

const device = generateSigningKeyPair()
const deviceId = toBase64Url(device.publicKey)
const limits = { maxFrameBytes: 1024 * 1024, maxEnvelopeBytes: 4096 }
const key = randomBytes(32)

const envelope = (size: number) =>
  sealEnvelope({ room: 'r', epoch: 0, key, senderDevicePub: device.publicKey, senderDeviceSecret: device.secretKey, update: randomBytes(size) })

/** An update of `items` written by `client`, from clock 0: each an envelope of that many bytes, or a record. */
async function update(client: number, items: Array<number | 'record'>): Promise<Uint8Array> {
  const doc = new Y.Doc()
  for (const item of items) {
    if (item === 'record') writeAs(doc, client, OUTER_RECORDS, new Uint8Array(randomBytes(120)))
    else writeAs(doc, client, OUTER_LOG, await envelope(item))
  }
  return Y.encodeStateAsUpdate(doc)
}

const noClients = { get: () => undefined }

describe('outer update check', () => {
  it('stores every envelope that fits, and the quota counts stored bytes', async () => {
    const v = validateOuterUpdate(await update(5, [100, 100]), deviceId, noClients, limits, 10_000)
    expect(v.refused).toEqual([])
    expect(v.rows).toHaveLength(1)
    expect(v.rows[0]).toMatchObject({ client: 5, clock: 0, len: 2, count: 2 })
    expect(v.newClients).toEqual([5])
    expect(v.bytes).toBeGreaterThan(200)
  })

  it('stores nothing of a new client id whose envelopes all meet a full conversation: no row, no binding', async () => {
    const v = validateOuterUpdate(await update(5, [100, 100, 100]), deviceId, noClients, limits, 1)
    expect(v.rows).toEqual([])
    expect(v.newClients).toEqual([])
    expect(v.bytes).toBe(0)
    // The sender still learns which of its items were refused, and why.
    expect(v.refused).toEqual([0, 1, 2].map((clock) => ({ client: 5, clock, len: 1, reason: Reason.QuotaExceeded })))
  })

  it('keeps what fits and leaves no placeholder after it: a full conversation does not grow', async () => {
    const bytes = await update(5, [100, 100, 100])
    const first = validateOuterUpdate(bytes, deviceId, noClients, limits, Number.POSITIVE_INFINITY)
    const oneFits = first.rows[0]!.parts[0]!.bytes.length
    const v = validateOuterUpdate(bytes, deviceId, noClients, limits, oneFits + 50)
    expect(v.rows).toHaveLength(1)
    expect(v.rows[0]).toMatchObject({ client: 5, clock: 0, len: 1, count: 1 })
    expect(v.bytes).toBe(oneFits)
    expect(v.refused.map((r) => [r.clock, r.reason])).toEqual([
      [1, Reason.QuotaExceeded],
      [2, Reason.QuotaExceeded],
    ])
  })

  it('refuses an envelope too large with a placeholder, counted against the quota, so the run goes on', async () => {
    const v = validateOuterUpdate(await update(5, [5000, 100]), deviceId, noClients, limits, 10_000)
    expect(v.refused).toEqual([{ client: 5, clock: 0, len: 1, reason: Reason.TooLarge }])
    expect(v.rows[0]).toMatchObject({ clock: 0, len: 2, count: 2 })
    expect(v.rows[0]!.parts[0]!.bytes).toEqual(Uint8Array.of(0, 1))
    // Past the quota even the placeholder is not stored: nothing is.
    const full = validateOuterUpdate(await update(5, [5000, 5000]), deviceId, noClients, limits, 1)
    expect(full.rows).toEqual([])
    expect(full.refused.map((r) => r.reason)).toEqual([Reason.QuotaExceeded, Reason.QuotaExceeded])
  })

  it('lets a record through a full conversation, with placeholders for the envelopes before it', async () => {
    const v = validateOuterUpdate(await update(5, [100, 'record', 100]), deviceId, noClients, limits, 1, 1 + recordAllowance({ maxRoomBytes: 1 }))
    expect(v.records).toHaveLength(1)
    // The envelope before the record stands as a placeholder; the one after it is not stored.
    expect(v.rows[0]).toMatchObject({ clock: 0, len: 2, count: 2 })
    expect(v.rows[0]!.parts[0]!.bytes).toEqual(Uint8Array.of(0, 1))
    expect(v.rows[0]!.parts[1]!.record).toBeDefined()
    expect(v.refused.map((r) => [r.clock, r.reason])).toEqual([
      [0, Reason.QuotaExceededForGood],
      [2, Reason.QuotaExceeded],
    ])
    expect(v.newClients).toEqual([5])
  })

  it('refuses records too once the conversation is past their allowance, for good: their placeholders stay', async () => {
    // Its author stops counting a refused record; stored later (a resend meeting room again),
    // it would count everywhere but there.
    const v = validateOuterUpdate(await update(5, [100, 'record', 100]), deviceId, noClients, limits, -100_000, -100)
    expect(v.records).toEqual([])
    expect(v.rows[0]).toMatchObject({ clock: 0, len: 2, count: 2 })
    expect(v.rows[0]!.parts.map((p) => p.bytes)).toEqual([Uint8Array.of(0, 1), Uint8Array.of(0, 1)])
    expect(v.bytes).toBe(4)
    // Those with a blank that stands tell the sender so; the last, not stored, is sent again by its sync.
    expect(v.refused.map((r) => [r.clock, r.reason])).toEqual([
      [0, Reason.QuotaExceededForGood],
      [1, Reason.QuotaExceededForGood],
      [2, Reason.QuotaExceeded],
    ])
  })

  it('continues a bound client past what it stores, and refuses the next write as a gap until the resend', async () => {
    const bytes = await update(5, [100, 100])
    const clients = new Map([[5, { device: deviceId, next: 0 }]])
    const v = validateOuterUpdate(bytes, deviceId, clients, limits, 1)
    expect(v.rows).toEqual([])
    expect(v.newClients).toEqual([])
    // The relay's clock for client 5 stays at 0: a later write from clock 2 is a gap, and the
    // device's resend from 0 meets the same quota.
    expect(validateOuterUpdate(bytes, deviceId, clients, limits, 1).refused).toHaveLength(2)
  })

  it('checks an update of 40,000 clients each refused a record past the allowance in linear time', () => {
    const doc = new Y.Doc()
    const rec = doc.getMap<Uint8Array>('rec')
    doc.transact(() => {
      for (let i = 0; i < 40_000; i++) {
        doc.clientID = 10 + i
        rec.set(envelopeKey(doc.clientID, 0), Uint8Array.of(i & 0xff))
      }
    })
    const bytes = Y.encodeStateAsUpdate(doc)
    const t0 = performance.now()
    const v = validateOuterUpdate(bytes, deviceId, noClients, { maxFrameBytes: 4 * 1024 * 1024, maxEnvelopeBytes: 4096 }, -1, -1)
    const ms = performance.now() - t0
    expect(v.refused).toHaveLength(40_000)
    expect(v.refused.every((r) => r.reason === Reason.QuotaExceededForGood)).toBe(true)
    // Scanning every refusal for each client was quadratic: 800 million steps here.
    expect(ms).toBeLessThan(2_000)
  })
})
