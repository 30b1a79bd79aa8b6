/**
 * A member's history snapshot that claims clocks another member has not written yet as
 * deleted: every fresh device applying it used to drop that member's later messages, silently
 * (snapshot-state.ts). The same claim as GC is not caught yet (PROTOCOL §11, "Applying").
 */
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import type { Conversation } from '../../src/client/index.js'
import { texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

const snapshotOf = (conv: Conversation) => (conv as unknown as { writeSnapshot: (state?: Uint8Array) => Promise<void> }).writeSnapshot.bind(conv)
const compacted = (w: World) => w.logLines.filter((l) => l.includes('"compacted"')).length

function deleteSetUpdate(client: number, clock: number, len: number): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 0)
  encoding.writeVarUint(e, 1)
  encoding.writeVarUint(e, client)
  encoding.writeVarUint(e, 1)
  encoding.writeVarUint(e, clock)
  encoding.writeVarUint(e, len)
  return encoding.toUint8Array(e)
}

async function setup() {
  world = new World()
  await world.relay()
  const alice = await world.client('alice', { compaction: false })
  const bob = await world.client('bob', { compaction: false })
  await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'both online')
  const aliceConv = await alice.createConversation({ title: 'Trust' })
  const bobConv = await bob.join(await aliceConv.invite())
  await aliceConv.send('before 1')
  await bobConv.send('before 2')
  await until(() => texts(bobConv).includes('before 1') && texts(aliceConv).includes('before 2'), 10_000, 'exchange')
  return { alice, bob, aliceConv, bobConv }
}

describe('a member forges a snapshot that claims clocks another member has not written yet', () => {
  for (const how of ['control: honest state', 'delete-set'] as const) {
    it(`(${how}) a fresh device still shows that member's messages sent after the snapshot`, async () => {
      const { aliceConv, bobConv } = await setup()
      const aliceClient = aliceConv.doc.clientID
      const aliceNext = Y.getState(aliceConv.doc.store, aliceClient)
      const real = Y.encodeStateAsUpdate(bobConv.doc)
      const extra = deleteSetUpdate(aliceClient, aliceNext, 100_000)
      const forged = how.startsWith('control') ? real : Y.mergeUpdates([real, extra])
      await snapshotOf(bobConv)(forged)
      await until(() => compacted(world) > 0, 20_000, 'relay compacted under the forged snapshot')
      // Alice talks on after the snapshot, from the same inner client (no device joined yet).
      for (let i = 0; i < 5; i++) await aliceConv.send(`after ${i}`)
      expect(aliceConv.doc.clientID).toBe(aliceClient)
      await until(() => texts(bobConv).includes('after 4'), 10_000, 'bob has the later messages')
      const carol = await world.client('carol')
      const carolConv = await carol.join(await aliceConv.invite())
      // Carol gets the earlier history from the snapshot ...
      await until(() => texts(carolConv).includes('before 2'), 15_000, 'carol has the snapshot history')
      // ... and the later rows are not compacted: the relay still sends them. She should show them.
      await until(() => texts(carolConv).includes('after 4'), 10_000, "carol shows Alice's later messages")
      expect(texts(carolConv).filter((t) => t.startsWith('after'))).toEqual(['after 0', 'after 1', 'after 2', 'after 3', 'after 4'])
    })
  }

  it('(honest GC at the end of a client: a deleted nested list) a fresh device shows her next message', async () => {
    const { aliceConv, bobConv } = await setup()
    const aliceClient = aliceConv.doc.clientID
    // Alice's app keeps a list, then deletes it: its items end her client as GC in Bob's copy.
    await aliceConv.setInner((doc) => {
      const list = new Y.Array<number>()
      doc.getMap('app').set('list', list)
      list.push([1, 2, 3])
    })
    await aliceConv.setInner((doc) => doc.getMap('app').delete('list'))
    await until(() => bobConv.doc.getMap('app').size === 0 && Y.getState(bobConv.doc.store, aliceClient) === Y.getState(aliceConv.doc.store, aliceClient), 10_000, 'bob has it')
    await snapshotOf(bobConv)()
    await until(() => compacted(world) > 0, 20_000, 'compacted')
    await aliceConv.send('after the list')
    expect(aliceConv.doc.clientID).toBe(aliceClient)
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => texts(carolConv).includes('after the list'), 15_000, 'carol shows it')
    expect(Y.getState(carolConv.doc.store, aliceClient)).toBe(Y.getState(aliceConv.doc.store, aliceClient))
    expect(carolConv.doc.store.pendingStructs).toBeNull()
  })

  it('(honest: an offline insert into a list deleted meanwhile) a fresh device shows the inserter’s later message', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice', { compaction: false })
    const bob = await world.client('bob', { compaction: false })
    await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'both online')
    const aliceConv = await alice.createConversation({ title: 'T' })
    const bobConv = await bob.join(await aliceConv.invite())
    await aliceConv.send('before 1')
    await bobConv.send('before 2')
    await until(() => texts(bobConv).includes('before 1') && texts(aliceConv).includes('before 2'), 10_000, 'exchange')
    await aliceConv.setInner((doc) => {
      const list = new Y.Array<number>()
      doc.getMap('app').set('list', list)
      list.push([1, 2, 3])
    })
    await until(() => (bobConv.doc.getMap('app').get('list') as Y.Array<number> | undefined)?.length === 3, 10_000, 'bob has the list')
    bob.disconnect()
    await until(() => bob.connection === 'offline', 5000, 'bob offline')
    await aliceConv.setInner((doc) => doc.getMap('app').delete('list'))
    // Bob, offline, inserts into the list he still sees, then writes a message.
    await bobConv.setInner((doc) => (doc.getMap('app').get('list') as Y.Array<number>).insert(1, [9]))
    await bobConv.send('bob offline')
    const bobClient = bobConv.doc.clientID
    await snapshotOf(aliceConv)()
    bob.connect()
    await until(() => compacted(world) > 0, 20_000, 'compacted')
    await until(() => texts(aliceConv).includes('bob offline'), 15_000, 'alice shows bob offline')
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => texts(carolConv).includes('before 2'), 15_000, 'carol has the snapshot history')
    await until(() => texts(carolConv).includes('bob offline'), 10_000, "carol shows Bob's offline message")
    expect(Y.getState(carolConv.doc.store, bobClient)).toBe(Y.getState(bobConv.doc.store, bobClient))
  })
})
