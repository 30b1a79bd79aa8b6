import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { chunkForSealing } from '../../src/client/seal-chunks.js'

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
