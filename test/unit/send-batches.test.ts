import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { verifyMessages } from '../../src/client/message-signature.js'
import { SendBatches, type SendBatchesHost } from '../../src/client/send-batches.js'
import type { StoredMessage } from '../../src/client/shown-list.js'
import { generateSigningKeyPair, toBase64Url } from '../../src/shared/crypto/index.js'

const ROOM = 'room-1'
const user = 'U'.repeat(43)
const device = generateSigningKeyPair()
const deviceId = toBase64Url(device.publicKey)

const message = (n: number, text = `message ${n}`): StoredMessage => ({ t: text, at: 1_700_000_000_000 + n, h: 1_700_000_000_000 + n, n, d: deviceId })

/** A document and a sealer that is free when the test says so; each write is one transaction, as the conversation's. */
function sender(options: { maxEnvelopeBytes?: number; failWrite?: (ids: string[]) => boolean } = {}) {
  const doc = new Y.Doc()
  const writes: string[][] = []
  let free: () => void = () => {}
  let sealer: Promise<void> = Promise.resolve()
  const host: SendBatchesHost = {
    id: ROOM,
    inner: doc,
    userId: user,
    deviceSecret: device.secretKey,
    maxEnvelopeBytes: options.maxEnvelopeBytes ?? 1 << 20,
    sealerFree: () => sealer,
    writeInner: async (change, ids) => {
      doc.transact(change)
      writes.push(ids)
      if (options.failWrite?.(ids)) throw new Error('disk full')
    },
    report: (err) => {
      throw err
    },
  }
  const busy = () => {
    sealer = new Promise<void>((r) => (free = r))
  }
  return { batches: new SendBatches(host), doc, writes, busy, free: () => free() }
}

const stored = (doc: Y.Doc) => [...doc.getMap<StoredMessage>('messages').entries()].map(([id, value]) => ({ id, value }))
const owner = (d: string) => (d === deviceId ? user : undefined)

describe('send batches', () => {
  it('signs a lone send by itself, and sends made together with one batch signature, each verifiable', async () => {
    const { batches, doc, writes } = sender()
    await batches.add(`${user}.a`, message(0), 9)
    await Promise.all([1, 2, 3].map((n) => batches.add(`${user}.b${n}`, message(n), 9)))
    expect(writes).toEqual([[`${user}.a`], [`${user}.b1`, `${user}.b2`, `${user}.b3`]])
    const all = stored(doc)
    expect(all.find((m) => m.id === `${user}.a`)!.value.s).toHaveLength(64)
    expect(all.filter((m) => m.value.b !== undefined).map((m) => m.value.i)).toEqual([0, 1, 2])
    const batchEntries = doc.getMap('messageBatches')
    expect(await verifyMessages(ROOM, all, owner, (k) => batchEntries.get(k))).toEqual([true, true, true, true])
  })

  it('holds sends while the sealer is busy and writes them as one batch when it is free, in send order', async () => {
    const { batches, writes, busy, free } = sender()
    busy()
    const sent = [1, 2, 3, 4].map((n) => batches.add(`${user}.m${n}`, message(n), 9))
    await new Promise((r) => setTimeout(r, 10))
    expect(writes).toEqual([])
    free()
    await Promise.all(sent)
    expect(writes).toEqual([[1, 2, 3, 4].map((n) => `${user}.m${n}`)])
  })

  it('splits what does not fit half the envelope limit (texts and each message’s overhead) into batches of their own', async () => {
    const { batches, writes } = sender({ maxEnvelopeBytes: 1024 + 2 * 1200 })
    const text = 'x'.repeat(250)
    await Promise.all([1, 2, 3].map((n) => batches.add(`${user}.m${n}`, message(n, text), 250)))
    expect(writes.map((w) => w.length)).toEqual([2, 1])
  })

  it('rejects every send of a batch whose write failed, and only those', async () => {
    const { batches, busy, free } = sender({ failWrite: (ids) => ids.includes(`${user}.bad`) })
    busy()
    const first = [batches.add(`${user}.bad`, message(1), 9), batches.add(`${user}.also`, message(2), 9)].map((p) => p.then(() => 'ok', (e: Error) => e.message))
    free()
    expect(await Promise.all(first)).toEqual(['disk full', 'disk full'])
    await expect(batches.add(`${user}.next`, message(3), 9)).resolves.toBeUndefined()
  })

  it('is drained once every send accepted so far is written', async () => {
    const { batches, writes } = sender()
    void batches.add(`${user}.m1`, message(1), 9)
    await batches.drained()
    expect(writes).toEqual([[`${user}.m1`]])
  })
})
