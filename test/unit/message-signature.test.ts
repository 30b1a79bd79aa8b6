import { describe, expect, it } from 'vitest'
import { type MessageBatchEntry, signMessage, signMessageBatch, verifyMessages } from '../../src/client/message-signature.js'
import { generateSigningKeyPair, toBase64Url } from '../../src/shared/crypto/index.js'

const room = 'room-1'
const alice = 'A'.repeat(43)
const bob = 'B'.repeat(43)
const aliceDevice = generateSigningKeyPair()
const bobDevice = generateSigningKeyPair()
const aliceDeviceId = toBase64Url(aliceDevice.publicKey)
const bobDeviceId = toBase64Url(bobDevice.publicKey)
const owner = (device: string) => (device === aliceDeviceId ? alice : device === bobDeviceId ? bob : undefined)

const message = (i: number, d = aliceDeviceId) => ({ t: `message ${i}`, at: 1_700_000_000_000 + i, h: 1_700_000_000_000 + i, n: i, d })

/** Three messages of Alice's sent together, as stored: each names the entry and its place. */
async function aliceBatch() {
  const key = `${alice}.batch1`
  const items = [0, 1, 2].map((i) => ({ id: `${alice}.m${i}`, m: message(i) }))
  const entry = await signMessageBatch(room, key, items, aliceDevice.secretKey)
  const stored = items.map(({ id, m }, i) => ({ id, value: { ...m, b: 'batch1', i } as Record<string, unknown> }))
  const entries = new Map<string, unknown>([[key, entry]])
  return { key, entry, stored, entries }
}

describe('message signatures', () => {
  it('verifies a message signed alone and refuses it once its text changed', async () => {
    const m = message(1)
    const s = await signMessage(room, `${alice}.x`, m, aliceDevice.secretKey)
    expect(await verifyMessages(room, [{ id: `${alice}.x`, value: { ...m, s } }], owner)).toEqual([true])
    expect(await verifyMessages(room, [{ id: `${alice}.x`, value: { ...m, t: 'changed', s } }], owner)).toEqual([false])
  })

  it('verifies every message of a batch through one entry, one hash each', async () => {
    const { entry, stored, entries } = await aliceBatch()
    expect(entry.h.length).toBe(3 * 32)
    expect(entry.s.length).toBe(64)
    expect(await verifyMessages(room, stored, owner, (k) => entries.get(k))).toEqual([true, true, true])
    // Any subset, in any order: a page of verification holds what it holds.
    expect(await verifyMessages(room, [stored[2]!, stored[0]!], owner, (k) => entries.get(k))).toEqual([true, true])
  })

  it('refuses only the altered message of a batch, and a message moved to another place in it', async () => {
    const { stored, entries } = await aliceBatch()
    const altered = { ...stored[1]!, value: { ...stored[1]!.value, t: 'I owe Bob 500 euros' } }
    expect(await verifyMessages(room, [stored[0]!, altered, stored[2]!], owner, (k) => entries.get(k))).toEqual([true, false, true])
    const moved = { ...stored[0]!, value: { ...stored[0]!.value, i: 1 } }
    const outside = { ...stored[0]!, value: { ...stored[0]!.value, i: 3 } }
    expect(await verifyMessages(room, [moved, outside], owner, (k) => entries.get(k))).toEqual([false, false])
  })

  it('refuses a batch whose entry is missing, tampered, of another device, or under another user’s key', async () => {
    const { key, entry, stored } = await aliceBatch()
    const check = (e: unknown, values = stored) => verifyMessages(room, values, owner, (k) => (k === key ? e : undefined))
    expect(await check(undefined)).toEqual([false, false, false])
    // A hash list edited to match an edited message: the entry's signature no longer holds.
    const edited = { ...stored[1]!.value, t: 'edited' }
    const forgedHashes = (await signMessageBatch(room, key, [0, 1, 2].map((i) => ({ id: stored[i]!.id, m: (i === 1 ? edited : stored[i]!.value) as ReturnType<typeof message> })), aliceDevice.secretKey)).h
    const tampered: MessageBatchEntry = { ...entry, h: forgedHashes }
    expect(await check(tampered, [stored[0]!, { ...stored[1]!, value: edited }, stored[2]!])).toEqual([false, false, false])
    // An entry that names Bob's device cannot cover Alice's messages, even validly signed by Bob.
    const bobsItems = [0, 1, 2].map((i) => ({ id: stored[i]!.id, m: message(i, bobDeviceId) }))
    const bobsEntry = await signMessageBatch(room, key, bobsItems, bobDevice.secretKey)
    expect(await check(bobsEntry, bobsItems.map(({ id, m }, i) => ({ id, value: { ...m, b: 'batch1', i } })))).toEqual([false, false, false])
    // A message's entry is looked up under its author's userId only: Alice's entry stored
    // under Bob's key covers nothing of Alice's.
    const asked: string[] = []
    const underBob = (k: string) => {
      asked.push(k)
      return k === `${bob}.batch1` ? entry : undefined
    }
    expect(await verifyMessages(room, stored, owner, underBob)).toEqual([false, false, false])
    expect(new Set(asked)).toEqual(new Set([key]))
    // The same entry in another room does not hold.
    expect(await verifyMessages('room-2', stored, owner, () => entry)).toEqual([false, false, false])
  })

  it('refuses malformed entries and references without throwing', async () => {
    const { key, stored } = await aliceBatch()
    for (const bad of [null, 1, 'x', {}, { s: new Uint8Array(64), d: aliceDeviceId, h: new Uint8Array(33) }, { s: new Uint8Array(63), d: aliceDeviceId, h: new Uint8Array(96) }]) {
      expect(await verifyMessages(room, stored, owner, (k) => (k === key ? bad : undefined))).toEqual([false, false, false])
    }
    for (const ref of [{ b: 1, i: 0 }, { b: 'batch1', i: -1 }, { b: 'batch1', i: 0.5 }, { b: 'batch1' }, {}]) {
      const { b: _b, i: _i, ...plain } = stored[0]!.value
      expect(await verifyMessages(room, [{ id: stored[0]!.id, value: { ...plain, ...ref } }], owner, () => undefined)).toEqual([false])
    }
  })
})
