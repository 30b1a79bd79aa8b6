import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { keyOf } from '../../src/client/conversation-record.js'
import { MembershipBook } from '../../src/client/membership-book.js'
import { openDeviceStore } from '../../src/client/storage/open-store.js'
import { RoomMessage } from '../../src/shared/room-messages.js'
import { FrameType, readFrame } from '../../src/shared/wire.js'
import { FrameProxy } from './frame-proxy.js'
import { until, World } from './harness.js'

let world: World
let proxy: FrameProxy | undefined
afterEach(async () => {
  await world?.close()
  await proxy?.close()
  proxy = undefined
})

describe('record positions on disk', () => {
  it('keep what rows brought when the ack of one of our own records came just before them', async () => {
    world = new World()
    await world.relay()
    // What the relay sends Alice can be held, then let through acknowledgements first.
    let holding = false
    const held: Array<{ ack: boolean; send: () => void }> = []
    proxy = await FrameProxy.start(
      () => world.url,
      (to, data, send) => {
        if (to !== 'device' || !holding) return send()
        const frame = readFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
        held.push({ ack: frame.type === FrameType.Room && frame.message[0] === RoomMessage.Ack, send })
      },
    )
    const path = join(world.dir, 'alice-order.db')
    const alice = await world.client('alice', { storage: path, relay: proxy.url, compaction: false })
    const bob = await world.client('bob', { compaction: false })
    const aliceConv = await alice.createConversation({ title: 'Order' })
    const bobConv = await bob.join(await aliceConv.invite())
    await until(() => aliceConv.members().length === 2, 10_000, 'alice folds bob in')
    await new Promise((r) => setTimeout(r, 200))

    // Bob's epoch record reaches the relay, then Alice's invite record: the rows of Bob's and the
    // ack of hers wait, and then come to Alice in one go, the ack first.
    holding = true
    await bobConv.rotateKey()
    await until(() => held.length >= 1, 10_000, "bob's record on its way to alice")
    const invited = aliceConv.invite()
    await until(() => held.some((h) => h.ack), 10_000, "the ack of alice's record")
    holding = false
    const acks = held.filter((h) => h.ack)
    const rest = held.filter((h) => !h.ack)
    held.length = 0
    for (const h of [...acks, ...rest]) h.send()
    await invited
    await until(() => aliceConv.membershipState.epoch === 1, 10_000, "alice folds bob's epoch")
    const recordKeys = [...(aliceConv as unknown as { outer: { getMap(n: string): Map<string, unknown> } }).outer.getMap('rec').keys()].sort()
    await alice.close()

    // Every record she holds has its position on disk: a restart can place (fold) each of them.
    const disk = await openDeviceStore({ storage: path })
    const stored = await disk.get(keyOf.recordSeqs(aliceConv.id))
    await disk.close()
    const book = new MembershipBook(aliceConv.id, undefined as never)
    book.loadSeqs(stored!)
    expect([...(book as unknown as { recordSeq: Map<string, number> }).recordSeq.keys()].sort()).toEqual(recordKeys)
  })
})
