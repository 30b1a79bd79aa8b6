import { describe, expect, it } from 'vitest'
import { createCommitGroup } from '../../src/client/storage/commit-group.js'
import type { Batch } from '../../src/client/storage/device-store.js'

/** A group over a recording writer: which batches went in which write, and when. */
function recorded(lingerMs: number) {
  const writes: Array<{ keys: string[]; at: number }> = []
  const t0 = performance.now()
  const group = createCommitGroup((batches: readonly Batch[]) => {
    writes.push({ keys: batches.map((b) => b.put![0]![0]), at: performance.now() - t0 })
  }, lingerMs)
  const put = (key: string, soon = false) => group.commit({ put: [[key, new Uint8Array([1])]] }, soon)
  return { group, writes, put, t0 }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('commit group', () => {
  it('writes an ordinary commit at once, and one issued during that write in the next group', async () => {
    const { writes, put } = recorded(1_000)
    await Promise.all([put('a'), put('b')])
    expect(writes.map((w) => w.keys)).toEqual([['a', 'b']])
    expect(writes[0]!.at).toBeLessThan(500)
  })

  it('holds soon commits until the oldest has waited its linger, then writes them in one group', async () => {
    const { writes, put } = recorded(120)
    const done = [put('r1', true)]
    await sleep(30)
    done.push(put('r2', true))
    await sleep(30)
    done.push(put('cursor', true))
    expect(writes).toEqual([])
    await Promise.all(done)
    expect(writes.map((w) => w.keys)).toEqual([['r1', 'r2', 'cursor']])
    expect(writes[0]!.at).toBeGreaterThanOrEqual(115)
  })

  it('writes lingering commits at once, before it and in call order, when an ordinary one comes', async () => {
    const { writes, put } = recorded(5_000)
    const soon = put('received', true)
    await sleep(20)
    await Promise.all([soon, put('sent')])
    expect(writes.map((w) => w.keys)).toEqual([['received', 'sent']])
    expect(writes[0]!.at).toBeLessThan(2_000)
  })

  it('drains lingering commits without waiting out the linger', async () => {
    const { group, writes, put } = recorded(5_000)
    const soon = put('received', true)
    await group.drain()
    await soon
    expect(writes.map((w) => w.keys)).toEqual([['received']])
    expect(writes[0]!.at).toBeLessThan(2_000)
  })

  it('rejects every commit of a group whose write fails, and goes on with the next', async () => {
    let fail = true
    const group = createCommitGroup(() => {
      if (fail) {
        fail = false
        throw new Error('disk full')
      }
    }, 50)
    const a = group.commit({ put: [['a', null]] }, true)
    const b = group.commit({ put: [['b', null]] })
    await expect(a).rejects.toThrow('disk full')
    await expect(b).rejects.toThrow('disk full')
    await expect(group.commit({ put: [['c', null]] }, true)).resolves.toBeUndefined()
  })
})
