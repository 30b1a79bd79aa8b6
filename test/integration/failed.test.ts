import { afterEach, describe, expect, it } from 'vitest'
import { atLeastSent, pair, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

describe('a message the relay refuses for good', () => {
  it('turns failed with the reason, does not block later messages, and can be retried or discarded', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    // Written offline against the relay's old limit; the restarted relay accepts less.
    await relay.close()
    const big = await aliceConv.send('x'.repeat(8000))
    const small = await aliceConv.send('small one')
    const relay2 = await world.relay({ limits: { maxEnvelopeBytes: 4096 } })
    await until(() => aliceConv.message(big.id)?.status === 'failed', 10_000, 'big fails')
    expect(aliceConv.message(big.id)!.error).toMatch(/too large/)
    expect(world.errors.get(alice)!.some((e) => e.code === 'refused')).toBe(true)
    await until(() => atLeastSent(aliceConv.message(small.id)?.status), 10_000, 'small sent')
    // The tombstone fills the gap: later messages reach Bob, the failed one does not.
    await aliceConv.send('after the failure')
    await until(() => texts(bobConv).includes('after the failure'), 5000, 'later message flows')
    expect(texts(bobConv)).toEqual(['small one', 'after the failure'])

    await aliceConv.discard(big.id)
    expect(aliceConv.message(big.id)).toBeUndefined()
    await expect(aliceConv.retry(small.id)).rejects.toMatchObject({ code: 'invalid_argument' })
    await expect(aliceConv.discard('nope')).rejects.toMatchObject({ code: 'not_found' })
    await bobConv.send('bob still fine')
    await until(() => texts(aliceConv).includes('bob still fine'), 10_000, 'alice gets bob')
    // The placeholder the relay stored is a deletion to Yjs; syncing it must not cut anyone off.
    expect(relay2.metrics.rejectedCount('malformed payload')).toBe(0)
  })

  it('discarding the failed messages of a batch removes its signature entry with the last of them', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv } = await pair(world)
    await relay.close()
    // Sent together offline: one batch, one envelope, which the restarted relay finds too large.
    const [a, b] = await Promise.all([aliceConv.send('y'.repeat(3000)), aliceConv.send('z'.repeat(3000))])
    const messages = aliceConv.doc.getMap<{ b?: string }>('messages')
    const entries = aliceConv.doc.getMap('messageBatches')
    const nonce = messages.get(a!.id)!.b!
    expect(messages.get(b!.id)!.b).toBe(nonce)
    const key = `${alice.userId}.${nonce}`
    expect(entries.has(key)).toBe(true)
    await world.relay({ limits: { maxEnvelopeBytes: 4096 } })
    await until(() => aliceConv.message(a!.id)?.status === 'failed' && aliceConv.message(b!.id)?.status === 'failed', 10_000, 'both fail')
    await aliceConv.discard(a!.id)
    // Still named by the other message: it stays, or that message could not be checked.
    expect(entries.has(key)).toBe(true)
    await aliceConv.discard(b!.id)
    expect(entries.has(key)).toBe(false)
  })

  it('refuses a message over the relay’s advertised limit at send time, with nothing written', async () => {
    world = new World()
    await world.relay({ limits: { maxEnvelopeBytes: 4096 } })
    const { aliceConv } = await pair(world)
    await expect(aliceConv.send('y'.repeat(5000))).rejects.toMatchObject({ code: 'too_large' })
    expect(texts(aliceConv)).toEqual([])
  })
})
