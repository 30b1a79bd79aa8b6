import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import { afterEach, describe, expect, it } from 'vitest'
import type { Conversation } from '../../src/client/index.js'
import { randomKey } from '../../src/shared/crypto/index.js'
import { sealEnvelope } from '../../src/shared/envelope.js'
import { envelopeKey } from '../../src/shared/outer-keys.js'
import { SyncStep, writeSyncMessage } from '../../src/shared/room-messages.js'
import { type Client, pair, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

/** Reach into a member's engine, as a modified client would. */
const outerOf = (conv: Conversation) => (conv as unknown as { outer: Y.Doc }).outer
const errorsOf = (c: Client) => world.errors.get(c)!
const codes = (c: Client) => errorsOf(c).map((e) => e.code)

describe('confidentiality at rest and in logs', () => {
  it('keeps texts, names and titles out of the relay database and its logs', async () => {
    world = new World()
    const relay = await world.relay()
    const alice = await world.client('AliceDisplayName')
    const bob = await world.client('BobDisplayName')
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    const conv = await alice.createConversation({ title: 'SecretTripTitle' })
    const bobConv = await bob.join(await conv.invite())
    await conv.send('PlaintextFromAlice-42')
    await bobConv.send('PlaintextFromBob-43')
    await until(() => texts(conv).length === 2 && texts(bobConv).length === 2)
    await relay.close()
    const needles = ['PlaintextFromAlice-42', 'PlaintextFromBob-43', 'AliceDisplayName', 'BobDisplayName', 'SecretTripTitle']
    const files = readdirSync(world.dir).filter((f) => f.startsWith('relay.db'))
    expect(files.length).toBeGreaterThan(0)
    const haystacks = [...files.map((f) => readFileSync(join(world.dir, f))), Buffer.from(world.logLines.join(''))]
    for (const hay of haystacks) {
      for (const needle of needles) {
        expect(hay.includes(Buffer.from(needle))).toBe(false)
        expect(hay.includes(Buffer.from(needle, 'utf16le'))).toBe(false)
      }
    }
    expect(world.logLines.length).toBeGreaterThan(0)
  })
})

describe('integrity and authorship', () => {
  async function threeMembers() {
    world = new World()
    const relay = await world.relay()
    const { alice, bob, aliceConv, bobConv, invite } = await pair(world)
    const mallory = await world.client('mallory')
    const malConv = await mallory.join(invite)
    await aliceConv.send('original by alice')
    await until(() => texts(bobConv).includes('original by alice') && texts(malConv).includes('original by alice'))
    return { relay, alice, bob, mallory, aliceConv, bobConv, malConv }
  }

  /** Write raw bytes into Mallory's outer log, as a tampered client would. */
  function writeEnvelope(conv: Conversation, bytes: Uint8Array) {
    const outer = outerOf(conv)
    outer.transact(() => outer.getMap<Uint8Array>('log').set(envelopeKey(outer.clientID, Y.getState(outer.store, outer.clientID)), bytes))
  }

  it('rejects a flipped bit, a wrong key and a forged sender, and the conversation keeps working', async () => {
    const { relay, alice, bob, mallory, aliceConv, bobConv, malConv } = await threeMembers()
    const identity = (mallory as unknown as { identity: { devicePub: Uint8Array; deviceSecret: Uint8Array } }).identity
    const seal = (key: Uint8Array, devicePub = identity.devicePub) =>
      sealEnvelope({ room: malConv.id, epoch: 0, key, senderDevicePub: devicePub, senderDeviceSecret: identity.deviceSecret, update: new Uint8Array([0, 0]) })
    const good = await seal(malConv.keys().get(0)!)
    const flipped = good.slice()
    flipped[flipped.length - 70]! ^= 0x01
    writeEnvelope(malConv, flipped)
    await until(() => codes(bob).includes('envelope_rejected') && codes(alice).includes('envelope_rejected'), 5000, 'flipped bit rejected')
    writeEnvelope(malConv, await seal(randomKey()))
    await until(() => codes(bob).filter((c) => c === 'envelope_rejected').length >= 2, 5000, 'wrong key rejected')
    // Forged sender: claims Alice's device. The relay refuses it and cuts Mallory off.
    const aliceDevice = (alice as unknown as { identity: { devicePub: Uint8Array } }).identity.devicePub
    writeEnvelope(malConv, await seal(malConv.keys().get(0)!, aliceDevice))
    await until(() => relay.metrics.rejectedCount('malformed payload') >= 1, 5000, 'relay refuses forged sender')
    await aliceConv.send('still works')
    await until(() => texts(bobConv).includes('still works'))
    await bobConv.send('and back')
    await until(() => texts(aliceConv).includes('and back'))
    expect(texts(aliceConv)).toEqual(texts(bobConv))
  })

  it("rejects a member's signed edit or deletion of another member's message, and reuse of another device's client id", async () => {
    const { alice, bob, aliceConv, bobConv, malConv } = await threeMembers()
    const target = bobConv.messages().find((m) => m.text === 'original by alice')!.id
    // Edit another member's message.
    malConv.doc.getMap('messages').set(target, { t: 'forged text', at: 1, h: 1, n: 0, d: 'x' })
    await until(() => codes(bob).includes('authorship_violation') && codes(alice).includes('authorship_violation'), 5000, 'edit rejected')
    expect(texts(bobConv)).toContain('original by alice')
    expect(texts(bobConv)).not.toContain('forged text')
    // Delete it: Mallory's doc no longer even agrees, so she deletes from a fresh copy.
    const victim = await aliceConv.send('second by alice')
    await until(() => texts(malConv).includes('second by alice'))
    malConv.doc.getMap('messages').delete(victim.id)
    await until(() => codes(bob).filter((c) => c === 'authorship_violation').length >= 2, 5000, 'delete rejected')
    expect(texts(bobConv)).toContain('second by alice')
    expect(texts(aliceConv)).toEqual(texts(bobConv))
  })

  it("rejects an update that reuses another device's Yjs client id", async () => {
    const { bob, aliceConv, bobConv, malConv, mallory } = await threeMembers()
    // Alice's current client id, bound to her device at Bob's by a message.
    await aliceConv.send('binds my client id')
    await until(() => texts(bobConv).includes('binds my client id'))
    const before = codes(bob).length
    malConv.doc.clientID = aliceConv.doc.clientID
    malConv.doc.getMap('profiles').set(mallory.userId, { name: 'mallory again' })
    await until(() => codes(bob).slice(before).includes('authorship_violation'), 5000, 'client id reuse rejected')
    await aliceConv.send('after reuse')
    await until(() => texts(bobConv).includes('after reuse'))
  })

  it("refuses a member's change that continues another member's next clock, so their next message stays theirs", async () => {
    const { alice, bob, aliceConv, bobConv, malConv } = await threeMembers()
    // Mallory's inner update, made by hand: one value with no parent of its own, continuing
    // Alice's next inner clock (her state vector says what it is). Yjs would hold it until
    // Alice writes that clock, then give it her entry.
    const aliceClient = aliceConv.doc.clientID
    const malClient = malConv.doc.clientID
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint(e, malClient)
    encoding.writeVarUint(e, Y.getState(malConv.doc.store, malClient))
    encoding.writeUint8(e, 0x88)
    encoding.writeVarUint(e, aliceClient)
    encoding.writeVarUint(e, Y.getState(bobConv.doc.store, aliceClient))
    encoding.writeVarUint(e, 1)
    encoding.writeAny(e, { t: 'forged by mallory', at: 1, h: 1, n: 0, d: 'x' })
    encoding.writeVarUint(e, 0)
    const before = codes(bob).length
    await (malConv as unknown as { queueSeal(update: Uint8Array, tags: string[]): Promise<void> }).queueSeal(encoding.toUint8Array(e), [])
    await until(() => codes(bob).slice(before).includes('authorship_violation'), 5000, 'continuation refused')
    const sent = await aliceConv.send('mine, and only mine')
    await until(() => texts(bobConv).includes('mine, and only mine'))
    // Bob holds exactly what Alice wrote, under every key she wrote.
    for (const root of ['messages', 'messageBatches']) {
      const hers = aliceConv.doc.getMap(root).toJSON()
      const atBob = bobConv.doc.getMap(root).toJSON()
      for (const key of Object.keys(hers)) expect(atBob[key], `${root} ${key}`).toEqual(hers[key])
    }
    expect(bobConv.message(sent.id)?.text).toBe('mine, and only mine')
    expect(codes(alice)).toContain('authorship_violation')
  })

  it('refuses an outer row of a client id over 2^32, which would make catch-ups unreadable to every member', async () => {
    const { relay, mallory, aliceConv, malConv } = await threeMembers()
    for (let i = 0; i < 3; i++) await aliceConv.send(`honest ${i}`)
    const identity = (mallory as unknown as { identity: { devicePub: Uint8Array; deviceSecret: Uint8Array } }).identity
    const doc = new Y.Doc()
    doc.clientID = 2 ** 40
    const envelope = await sealEnvelope({
      room: malConv.id,
      epoch: 0,
      key: malConv.keys().get(0)!,
      senderDevicePub: identity.devicePub,
      senderDeviceSecret: identity.deviceSecret,
      update: Y.encodeStateAsUpdate(new Y.Doc()),
    })
    doc.getMap<Uint8Array>('log').set(envelopeKey(doc.clientID, 0), envelope)
    const ws = (malConv as unknown as { provider: { ws: { send(b: Uint8Array): void } } }).provider.ws
    const rejected = relay.metrics.rejectedCount('malformed payload')
    ws.send(writeSyncMessage(SyncStep.Update, Y.encodeStateAsUpdate(doc)))
    await until(() => relay.metrics.rejectedCount('malformed payload') > rejected, 5000, 'relay refuses the row')
    // A new member's catch-up holds every message.
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => ['original by alice', 'honest 0', 'honest 1', 'honest 2'].every((t) => texts(carolConv).includes(t)), 10_000, 'carol caught up')
    expect(codes(carol)).not.toContain('malformed')
  })

  it('refuses an outer client id already bound to another device', async () => {
    const { relay, mallory, aliceConv, bobConv, malConv } = await threeMembers()
    const outer = outerOf(malConv)
    outer.clientID = outerOf(aliceConv).clientID
    await malConv.send('sneaky')
    await until(() => relay.metrics.rejectedCount('client id taken') >= 1, 5000, 'relay refuses client id')
    await until(() => codes(mallory).includes('refused'), 2000, 'mallory told')
    await aliceConv.send('after theft attempt')
    await until(() => texts(bobConv).includes('after theft attempt'))
    expect(texts(bobConv)).not.toContain('sneaky')
  })
})
