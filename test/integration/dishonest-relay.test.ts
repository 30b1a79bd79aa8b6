/**
 * What devices accept when the relay itself misbehaves: it can replay, reorder and re-serve
 * any envelope it stores, and it cannot tell a buggy or removed sender's envelope from a good
 * one. Rows are injected straight into the relay's database between restarts, as a
 * compromised operator would; every device must reach the same verdict on its own.
 */
import * as Y from 'yjs'
import { afterEach, describe, expect, it } from 'vitest'
import type { Conversation } from '../../src/client/index.js'
import { openSqliteRelayStore } from '../../src/relay/store/sqlite-store.js'
import { toBase64Url } from '../../src/shared/crypto/index.js'
import { readEnvelope, sealEnvelope } from '../../src/shared/envelope.js'
import { envelopeKey } from '../../src/shared/outer-keys.js'
import { parseUpdate } from '../../src/shared/yjs-v1.js'
import { type Client, pair, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

const outerOf = (conv: Conversation) => (conv as unknown as { outer: Y.Doc }).outer
const identityOf = (c: Client) => (c as unknown as { identity: { devicePub: Uint8Array; deviceSecret: Uint8Array; userId: string } }).identity
const errorText = (c: Client) => world.errors.get(c)!.map((e) => `${e.code}: ${e.message}`)
const logValues = (conv: Conversation) => [...outerOf(conv).getMap<Uint8Array>('log').values()]

/** Stop the relay, append `envelopes` as rows of fresh outer clients, start it again. */
async function injectAsRelay(room: string, envelopes: Uint8Array[]): Promise<void> {
  await world.relays.at(-1)!.close()
  const store = await openSqliteRelayStore(world.dbPath)
  const rows = envelopes.map((bytes) => {
    const doc = new Y.Doc()
    doc.clientID = 1 + Math.floor(Math.random() * 2 ** 30)
    doc.getMap<Uint8Array>('log').set(envelopeKey(doc.clientID, 0), bytes)
    const update = Y.encodeStateAsUpdate(doc)
    const s = parseUpdate(update).groups[0]!.structs[0]!
    return { room, client: doc.clientID, clock: 0, len: 1, count: 1, structs: update.slice(s.start, s.end) }
  })
  // Bound to the envelope's sender, as the relay binds every outer client to its device.
  const bindings = rows.map((row, i) => ({ room, client: row.client, device: toBase64Url(readEnvelope(envelopes[i]!).senderDevicePub) }))
  await store.append({ rows, bindings, records: [] })
  await store.close()
  await world.relay()
}

/** An inner update writing one message as `author`, made outside any engine (as a modified client would). */
function messageUpdate(authorUserId: string, text: string): Uint8Array {
  const doc = new Y.Doc()
  doc.getMap('messages').set(`${authorUserId}.${Math.random().toString(36).slice(2)}`, { t: text, at: Date.now(), h: Date.now(), n: 0, d: '' })
  return Y.encodeStateAsUpdate(doc)
}

describe('envelopes a dishonest relay serves', () => {
  it('applies a replayed envelope once, and refuses one replayed into another conversation', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    await aliceConv.send('only once')
    await until(() => texts(bobConv).includes('only once'))
    const original = logValues(aliceConv).find((v) => readEnvelope(v).ciphertext.length > 0 && v.length > 100)!
    const other = await alice.createConversation({ title: 'other' })
    const bobOther = await bob.join(await other.invite())
    const copies = [original, original]
    await injectAsRelay(aliceConv.id, copies)
    await injectAsRelay(other.id, [original])
    await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'reconnected')
    await aliceConv.send('after the replay')
    await other.send('other after the replay')
    await until(() => texts(bobConv).includes('after the replay') && texts(bobOther).includes('other after the replay'), 10_000, 'live again')
    // A device that loads the whole history with the copies in it sees each message once.
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite({ history: 'full' }))
    await until(() => texts(carolConv).includes('after the replay'), 10_000, 'carol caught up')
    for (const conv of [aliceConv, bobConv, carolConv]) expect(texts(conv).filter((t) => t === 'only once')).toHaveLength(1)
    expect(texts(bobOther)).not.toContain('only once')
    // The copy in the other room fails its signature: the room is bound into what was signed.
    expect(errorText(bob).some((e) => e.startsWith('envelope_rejected: envelope signature does not verify'))).toBe(true)
  })

  it('converges however the relay orders the rows, and each device shows them in relay order', async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv } = await pair(world)
    const alice = identityOf(world.clients[0]!)
    const key = aliceConv.keys().get(0)!
    // One author's dependent updates (each edits the same map entry), served newest first.
    const doc = new Y.Doc()
    const updates: Uint8Array[] = []
    doc.on('update', (u: Uint8Array) => updates.push(u))
    for (let i = 0; i < 5; i++) doc.getMap('messages').set(`${alice.userId}.m${i}`, { t: `r${i}`, at: i, h: i, n: 0, d: '' })
    const sealed = await Promise.all(
      updates.map((update) => sealEnvelope({ room: aliceConv.id, epoch: 0, key, senderDevicePub: alice.devicePub, senderDeviceSecret: alice.deviceSecret, update })),
    )
    await injectAsRelay(aliceConv.id, sealed.reverse())
    await until(() => texts(bobConv).filter((t) => t.startsWith('r')).length === 5, 10_000, 'bob converged')
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite({ history: 'full' }))
    await until(() => texts(carolConv).filter((t) => t.startsWith('r')).length === 5, 10_000, 'carol converged')
    expect(texts(carolConv)).toEqual(texts(bobConv))
    void bob
  })

  it("refuses an envelope that reuses a nonce (a buggy sender's), on every device alike", async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv } = await pair(world)
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite())
    const alice = identityOf(world.clients[0]!)
    const key = aliceConv.keys().get(0)!
    const nonce = new Uint8Array(24).fill(7)
    const seal = (text: string) =>
      sealEnvelope({ room: aliceConv.id, epoch: 0, key, senderDevicePub: alice.devicePub, senderDeviceSecret: alice.deviceSecret, update: messageUpdate(alice.userId, text), nonce })
    const first = await seal('first with the nonce')
    const second = await seal('second with the same nonce')
    await injectAsRelay(aliceConv.id, [first, second])
    await until(() => texts(bobConv).includes('first with the nonce') && texts(carolConv).includes('first with the nonce'), 10_000, 'first shown')
    await until(() => errorText(bob).some((e) => e.includes('reuses a nonce')) && errorText(carol).some((e) => e.includes('reuses a nonce')), 5000, 'refused')
    for (const conv of [bobConv, carolConv]) expect(texts(conv)).not.toContain('second with the same nonce')
  })

  it('lets an app write from its error handler: the write is sealed and delivered like any other', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    let replied = false
    bob.on('error', () => {
      if (replied) return
      replied = true
      void bobConv.send('written from the error handler')
    })
    const a = identityOf(alice)
    const nonce = new Uint8Array(24).fill(9)
    const seal = (text: string) =>
      sealEnvelope({ room: aliceConv.id, epoch: 0, key: aliceConv.keys().get(0)!, senderDevicePub: a.devicePub, senderDeviceSecret: a.deviceSecret, update: messageUpdate(a.userId, text), nonce })
    // The second envelope reuses the first one's nonce: Bob refuses it, inside his receive batch.
    await injectAsRelay(aliceConv.id, [await seal('one'), await seal('two')])
    await until(() => texts(aliceConv).includes('written from the error handler'), 10_000, 'the reply reached alice')
    expect(replied).toBe(true)
  })

  it("refuses a removed member's write under the old key even when the relay serves it", async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv, invite } = await pair(world)
    const carol = await world.client('carol')
    const carolConv = await carol.join(invite)
    await bobConv.send('bob while a member')
    await until(() => texts(carolConv).includes('bob while a member'))
    const oldKey = bobConv.keys().get(0)!
    const bobId = identityOf(bob)
    await aliceConv.removeMember(bob.userId)
    await until(() => carolConv.epoch === 1, 10_000, 'carol in epoch 1')
    const late = await sealEnvelope({
      room: aliceConv.id,
      epoch: 0,
      key: oldKey,
      senderDevicePub: bobId.devicePub,
      senderDeviceSecret: bobId.deviceSecret,
      update: messageUpdate(bobId.userId, 'bob after his removal'),
    })
    await bob.close()
    await injectAsRelay(aliceConv.id, [late])
    await aliceConv.send('alice after the injection')
    await until(() => texts(carolConv).includes('alice after the injection'), 10_000, 'carol caught up')
    const dave = await world.client('dave')
    const daveConv = await dave.join(await aliceConv.invite({ history: 'full' }))
    await until(() => texts(daveConv).includes('alice after the injection'), 10_000, 'dave caught up')
    for (const [client, conv] of [[carol, carolConv], [dave, daveConv]] as const) {
      expect(texts(conv)).toContain('bob while a member')
      expect(texts(conv)).not.toContain('bob after his removal')
      expect(errorText(client).some((e) => e.includes('after epoch 1 began'))).toBe(true)
    }
  })
})
