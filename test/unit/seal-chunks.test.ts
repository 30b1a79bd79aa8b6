import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { INNER_MESSAGE_BATCHES, INNER_MESSAGES } from '../../src/client/inner-guard.js'
import { signMessageBatch } from '../../src/client/message-signature.js'
import { chunkForSealing, MERGE_BYTES, sendsForBatch } from '../../src/client/seal-chunks.js'
import { generateSigningKeyPair, randomBytes, toBase64Url } from '../../src/shared/crypto/index.js'
import { utf8Length } from '../../src/shared/utf8-length.js'
import { tombstoneUpdate } from '../../src/client/tombstone.js'

/** One local transaction per message, as `send()` makes them. */
function sends(texts: string[]): Array<{ update: Uint8Array; tags: string[] }> {
  const doc = new Y.Doc()
  const out: Array<{ update: Uint8Array; tags: string[] }> = []
  doc.on('update', (update: Uint8Array) => out.push({ update, tags: [`m${out.length}`] }))
  for (const t of texts) doc.getMap('messages').set(`m${out.length}`, { t })
  return out
}

const apply = (updates: Uint8Array[]) => {
  const doc = new Y.Doc()
  for (const u of updates) Y.applyUpdate(doc, u)
  return doc.getMap('messages').toJSON()
}

describe('sealing a burst of sends', () => {
  it('merges queued updates into few chunks that apply to the same document, tags in send order', () => {
    const items = sends(Array.from({ length: 500 }, (_, i) => `message ${i} ${'x'.repeat(80)}`))
    const chunks = chunkForSealing(items, 16 * 1024)
    expect(chunks.length).toBeLessThan(10)
    expect(chunks.flatMap((c) => c.tags)).toEqual(items.flatMap((i) => i.tags))
    for (const c of chunks) expect(c.update.length).toBeLessThanOrEqual(16 * 1024)
    expect(apply(chunks.map((c) => c.update))).toEqual(apply(items.map((i) => i.update)))
  })

  it('keeps an update over a quarter of the limit in a chunk of its own, and the order around it', () => {
    const items = sends(['a', 'y'.repeat(5000), 'b', 'c'])
    const chunks = chunkForSealing(items, 16 * 1024)
    expect(chunks.map((c) => c.tags)).toEqual([['m0'], ['m1'], ['m2', 'm3']])
    expect(chunks[1]!.update).toBe(items[1]!.update)
  })

  it('passes a single update through untouched and makes nothing of nothing', () => {
    const [one] = sends(['only'])
    expect(chunkForSealing([one!], 16 * 1024)).toEqual([{ update: one!.update, tags: ['m0'] }])
    expect(chunkForSealing([], 16 * 1024)).toEqual([])
  })
})

describe('what never shares an envelope', () => {
  it('keeps an app’s own write to the document (no message tag) alone', () => {
    const items = sends(['a', 'b', 'c'])
    items[1]!.tags = []
    expect(chunkForSealing(items, 16 * 1024).map((c) => c.tags)).toEqual([['m0'], [], ['m2']])
  })

  it('does not merge an older update (a retry, a re-seal) with newer ones: every chunk is one unbroken clock range', () => {
    const [a, b, c] = sends(['a', 'b', 'c'])
    // a failed and is sent again while c is new; b (between them) went out long ago.
    const chunks = chunkForSealing([a!, c!], 16 * 1024)
    expect(chunks.map((ch) => ch.tags)).toEqual([['m0'], ['m2']])
    expect(chunkForSealing([a!, b!, c!], 16 * 1024).map((ch) => ch.tags)).toEqual([['m0', 'm1', 'm2']])
  })
})

describe('tombstone of a refused update', () => {
  it('deletes only its own items, never a range skipped inside it', () => {
    const [a, b, c] = sends(['a', 'b', 'c'])
    // An update holding a and c with a skip where b is (what merging a retry with a new send made).
    const gapped = Y.mergeUpdates([a!.update, c!.update])
    const receiver = new Y.Doc()
    Y.applyUpdate(receiver, a!.update)
    Y.applyUpdate(receiver, b!.update)
    Y.applyUpdate(receiver, tombstoneUpdate(gapped))
    expect(Object.keys(receiver.getMap('messages').toJSON())).toEqual(['m1'])
  })
})

describe('a batch of sends', () => {
  /** One batch written as a device writes it: a batch signature, then each message with its place in it. */
  async function batchUpdate(texts: string[]): Promise<Uint8Array> {
    const device = generateSigningKeyPair()
    const userId = toBase64Url(generateSigningKeyPair().publicKey)
    const d = toBase64Url(device.publicKey)
    const now = Date.now()
    const items = texts.map((t, n) => ({ id: `${userId}.${(now + n).toString(36).padStart(9, '0')}${toBase64Url(randomBytes(6))}`, m: { t, at: now, h: now + n, n, d } }))
    const b = toBase64Url(randomBytes(9))
    const entry = await signMessageBatch('room', `${userId}.${b}`, items, device.secretKey)
    const doc = new Y.Doc()
    let update: Uint8Array = new Uint8Array()
    doc.on('update', (u: Uint8Array) => (update = u))
    doc.transact(() => {
      doc.getMap(INNER_MESSAGE_BATCHES).set(`${userId}.${b}`, entry)
      items.forEach(({ id, m }, i) => {
        doc.getMap(INNER_MESSAGES).set(id, { ...m, b, i })
      })
    })
    return update
  }

  it('takes what fits the budget, texts and all, so its envelope stays under the relay limit', async () => {
    const texts = Array.from({ length: 2000 }, (_, i) => `#${i} ${'é'.repeat(100)}`)
    const sends = texts.map((text) => ({ text, bytes: utf8Length(text) }))
    const take = sendsForBatch(sends, MERGE_BYTES)
    expect(take).toBeGreaterThan(50)
    expect(take).toBeLessThan(texts.length)
    // The per-message allowance covers what a message costs in the update besides its text.
    expect((await batchUpdate(texts.slice(0, take))).length).toBeLessThanOrEqual(MERGE_BYTES)
  })

  it('takes one send alone even when it is over the budget, and never splits a text', () => {
    expect(sendsForBatch([{ bytes: 100_000 }, { bytes: 10 }], MERGE_BYTES)).toBe(1)
    expect(sendsForBatch([{ bytes: 10 }, { bytes: 100_000 }], MERGE_BYTES)).toBe(1)
    expect(sendsForBatch([], MERGE_BYTES)).toBe(0)
  })
})
