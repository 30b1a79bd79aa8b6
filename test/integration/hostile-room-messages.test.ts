/**
 * Room messages that reach a device without the relay's checks or the rows' ones: awareness,
 * which another member writes and the relay forwards as it is, and y-websocket's sync messages,
 * which a dishonest relay could use to put history into the outer log beside the checked rows
 * (room-provider.ts, room-awareness.ts).
 */
import * as encoding from 'lib0/encoding'
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import type { Conversation } from '../../src/client/index.js'
import { randomNonce, seal, SignatureDomain, signWithDomain, toBase64Url } from '../../src/shared/crypto/index.js'
import { RoomMessage, SyncStep, writeSyncMessage } from '../../src/shared/room-messages.js'
import { FrameType, readFrame, writeFrame } from '../../src/shared/wire.js'
import { parseUpdate } from '../../src/shared/yjs-v1.js'
import { FrameProxy } from './frame-proxy.js'
import { type Client, pair, texts, until, World } from './harness.js'

let world: World
let proxy: FrameProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
  await world?.close()
})

type Awareness = { getStates(): Map<number, unknown>; meta: Map<number, unknown> }
const awarenessOf = (conv: Conversation) => (conv as unknown as { provider: { awareness: Awareness } }).provider.awareness
/** Send bytes on the conversation's room socket, as a modified client would. */
const sendRaw = (conv: Conversation, bytes: Uint8Array) => (conv as unknown as { provider: { ws: { send(b: Uint8Array): void } } }).provider.ws.send(bytes)
const errorsOf = (c: Client) => world.errors.get(c)!.map((e) => `${e.code}: ${e.message}`)

/** An awareness message of `entries` (clientId, clock, state JSON). */
function awarenessMessage(entries: Array<[number, number, string]>): Uint8Array {
  const inner = encoding.createEncoder()
  encoding.writeVarUint(inner, entries.length)
  for (const [clientId, clock, state] of entries) {
    encoding.writeVarUint(inner, clientId)
    encoding.writeVarUint(inner, clock)
    encoding.writeVarString(inner, state)
  }
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, RoomMessage.Awareness)
  encoding.writeVarUint8Array(e, encoding.toUint8Array(inner))
  return encoding.toUint8Array(e)
}

async function threeMembers() {
  const { alice, bob, aliceConv, bobConv, invite } = await pair(world)
  const mallory = await world.client('mallory')
  const malConv = await mallory.join(invite)
  await aliceConv.send('hello')
  await until(() => texts(bobConv).includes('hello') && texts(malConv).includes('hello'))
  return { alice, bob, aliceConv, bobConv, malConv }
}

describe('awareness from a member', () => {
  it('refuses a state that is not JSON with a malformed error, and the device goes on', async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv, malConv } = await threeMembers()
    const uncaught: unknown[] = []
    const onUncaught = (err: unknown) => uncaught.push(err)
    process.prependListener('uncaughtException', onUncaught)
    try {
      sendRaw(malConv, awarenessMessage([[12345, 1, '{not json']]))
      await until(() => errorsOf(bob).some((e) => e.startsWith('malformed') && e.includes('awareness')), 10_000, 'bob refuses it')
    } finally {
      process.off('uncaughtException', onUncaught)
    }
    // Before, a SyntaxError thrown out of the socket's handler: a Node process died of it.
    expect(uncaught).toEqual([])
    await aliceConv.send('still here')
    await until(() => texts(bobConv).includes('still here'))
  })

  it('refuses a message of more entries, or a larger state, than a device sends', async () => {
    world = new World()
    await world.relay()
    const { bob, bobConv, malConv } = await threeMembers()
    const before = awarenessOf(bobConv).getStates().size
    sendRaw(malConv, awarenessMessage(Array.from({ length: 5 }, (_, i) => [50_000 + i, 1, '{}'] as [number, number, string])))
    sendRaw(malConv, awarenessMessage([[60_000, 1, JSON.stringify({ pad: 'x'.repeat(2000) })]]))
    sendRaw(malConv, awarenessMessage([[60_001, 1, '[1,2]']]))
    await until(() => errorsOf(bob).filter((e) => e.startsWith('malformed')).length >= 3, 10_000, 'three refusals')
    expect(awarenessOf(bobConv).getStates().size).toBe(before)
  })

  it('is not passed on by the relay past 8 KiB: no member receives it', async () => {
    world = new World()
    const relay = await world.relay()
    const { bob, bobConv, malConv } = await threeMembers()
    const before = awarenessOf(bobConv).meta.size
    // 40 entries of 400 bytes: a flood no device sends.
    sendRaw(malConv, awarenessMessage(Array.from({ length: 40 }, (_, i) => [70_000 + i, 1, JSON.stringify({ pad: 'x'.repeat(400) })] as [number, number, string])))
    await until(() => relay.metrics.rejectedCount('awareness too large') === 1, 10_000, 'the relay drops it')
    await new Promise((r) => setTimeout(r, 300))
    expect(awarenessOf(bobConv).meta.size).toBe(before)
    expect(errorsOf(bob)).toEqual([])
  })

  it("lets no member set this device's own state, or silence another's with a clock from far ahead", async () => {
    world = new World()
    await world.relay()
    const { aliceConv, bobConv, malConv } = await threeMembers()
    const aliceId = (aliceConv as unknown as { provider: { awareness: { clientID: number } } }).provider.awareness.clientID
    const bobAw = (bobConv as unknown as { provider: { awareness: Awareness & { clientID: number; getLocalState(): unknown } } }).provider.awareness
    const bobBefore = bobAw.getLocalState()
    // Near 2^53: y-protocols took it over the real state, and every later clock of Alice's lost to it.
    sendRaw(malConv, awarenessMessage([[bobAw.clientID, 2 ** 52, '{"mine":"now"}'], [aliceId, 2 ** 52, '{}']]))
    await new Promise((r) => setTimeout(r, 300))
    expect(bobAw.getLocalState()).toEqual(bobBefore)
    aliceConv.setTyping(true)
    await until(() => bobConv.typing().length === 1, 10_000, 'bob still sees alice typing')
  })

  it("keeps others' states within a bound however many client ids a member claims", async () => {
    world = new World()
    await world.relay()
    const { bobConv, malConv } = await threeMembers()
    // 400 messages of 4 fresh client ids each: 1,600 ids, where three devices are in the room.
    for (let m = 0; m < 400; m++) {
      sendRaw(malConv, awarenessMessage(Array.from({ length: 4 }, (_, i) => [1_000_000 + m * 4 + i, 1, '{}'] as [number, number, string])))
    }
    await until(() => awarenessOf(bobConv).meta.has(1_000_000 + 1599), 10_000, 'the last one taken')
    const aw = awarenessOf(bobConv)
    // 2 × 3 member devices + 8, and bob's own id.
    expect(aw.getStates().size).toBeLessThanOrEqual(15)
    expect(aw.meta.size).toBeLessThanOrEqual(15 + 4)
  })

  it("sends only its own state: a member's state is not sent back to the relay by every receiver", async () => {
    world = new World()
    await world.relay()
    let forwarded = 0
    proxy = await FrameProxy.start(
      () => world.url,
      (to, data, send) => {
        send()
        if (to !== 'relay') return
        try {
          const frame = readFrame(data)
          if (frame.type === FrameType.Room && frame.message[0] === RoomMessage.Awareness) forwarded++
        } catch {
          // Not ours to judge here.
        }
      },
    )
    const alice = await world.client('alice')
    const bob = await world.client('bob', { relay: proxy.url })
    const aliceConv = await alice.createConversation({ title: 'Trip' })
    const bobConv = await bob.join(await aliceConv.invite())
    await aliceConv.send('hello')
    await until(() => texts(bobConv).includes('hello'))
    forwarded = 0
    aliceConv.setTyping(true)
    await until(() => bobConv.typing().length === 1, 10_000, 'bob sees alice typing')
    await new Promise((r) => setTimeout(r, 300))
    expect(forwarded).toBe(0)
  })
})

describe('typing, as a member says it', () => {
  const aad = (room: string, epoch: number) => {
    const e = encoding.createEncoder()
    encoding.writeVarString(e, 'petrel/v1/awareness')
    encoding.writeVarString(e, room)
    encoding.writeVarUint(e, epoch)
    return encoding.toUint8Array(e)
  }
  const signedPart = (room: string, epoch: number, at: number, nonce: Uint8Array, c: Uint8Array) => {
    const e = encoding.createEncoder()
    encoding.writeVarString(e, room)
    encoding.writeVarUint(e, epoch)
    encoding.writeVarUint(e, at)
    encoding.writeUint8Array(e, nonce)
    encoding.writeVarUint8Array(e, c)
    return encoding.toUint8Array(e)
  }

  it('shows no one typing on the word of another member: a state counts for its signing device’s person only', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, bobConv, malConv } = await threeMembers()
    const mallory = world.clients.at(-1)!
    const identity = (mallory as unknown as { identity: { deviceId: string; deviceSecret: Uint8Array } }).identity
    const aliceDevice = (alice as unknown as { identity: { deviceId: string } }).identity.deviceId
    const epoch = malConv.epoch
    const key = malConv.keys().get(epoch)!
    const awareness = (malConv as unknown as { provider: { awareness: { setLocalState(s: unknown): void } } }).provider.awareness
    const claim = async (v: number, device: string, sign: boolean) => {
      const nonce = randomNonce()
      const c = seal(key, nonce, new TextEncoder().encode(JSON.stringify({ u: alice.userId, t: true })), aad(malConv.id, epoch))
      const at = Date.now()
      const s = sign ? toBase64Url(await signWithDomain(SignatureDomain.Awareness, identity.deviceSecret, signedPart(malConv.id, epoch, at, nonce, c))) : 'AAAA'
      awareness.setLocalState({ v, e: epoch, d: device, a: at, n: toBase64Url(nonce), c: toBase64Url(c), s })
      await new Promise((r) => setTimeout(r, 500))
    }
    // "Alice is typing", sealed under the key every member holds: unsigned (as every state was
    // before), signed by Mallory's own device, and named as Alice's device without her key.
    await claim(1, identity.deviceId, false)
    expect(bobConv.typing()).toEqual([])
    await claim(2, identity.deviceId, true)
    expect(bobConv.typing()).toEqual([])
    await claim(2, aliceDevice, true)
    expect(bobConv.typing()).toEqual([])
    // Mallory's own typing, said through the API, shows as hers.
    malConv.setTyping(true)
    await until(() => bobConv.typing().length === 1, 10_000, 'mallory typing')
    expect(bobConv.typing()).toEqual([mallory.displayName])
    expect(world.errors.get(bob)).toEqual([])
  })

  it("shows typing that was said once, once: a member sending Alice's signed state again neither revives nor outranks it", async () => {
    world = new World()
    await world.relay()
    const { alice, aliceConv, bobConv, malConv } = await threeMembers()
    const aliceAwareness = (aliceConv as unknown as { provider: { awareness: { getLocalState(): unknown } } }).provider.awareness
    const malAwareness = (malConv as unknown as { provider: { awareness: { setLocalState(s: unknown): void } } }).provider.awareness
    aliceConv.setTyping(true)
    await until(() => bobConv.typing().length === 1, 10_000, 'bob sees alice typing')
    const typing = aliceAwareness.getLocalState()
    // Alice's phone goes off mid-word: her "stopped" never comes, and Bob's indicator times out.
    alice.disconnect()
    await until(() => bobConv.typing().length === 0, 10_000, 'it times out at bob')
    // Mallory sends that signed state again, as her own: it is the one Bob saw, not news.
    malAwareness.setLocalState(typing)
    await new Promise((r) => setTimeout(r, 800))
    expect(bobConv.typing()).toEqual([])
    // Alice comes back and stops; Mallory's copy of the older "typing" does not outrank it.
    alice.connect()
    await until(() => alice.connection === 'online')
    aliceConv.setTyping(false)
    malAwareness.setLocalState({ ...(typing as object) })
    await new Promise((r) => setTimeout(r, 800))
    expect(bobConv.typing()).toEqual([])
  }, 30_000)
})

describe('sync messages from a dishonest relay', () => {
  it('refuses history sent outside rows: a later message still shows, and is not ✓✓ unseen', async () => {
    world = new World()
    await world.relay()
    let inject: Uint8Array[] = []
    let room = ''
    proxy = await FrameProxy.start(
      () => world.url,
      (to, _data, send) => {
        send()
        if (to !== 'device' || !room) return
        for (const message of inject.splice(0)) send(writeFrame({ type: FrameType.Room, room, message }))
      },
    )
    const alice = await world.client('alice')
    const bob = await world.client('bob', { relay: proxy.url })
    const aliceConv = await alice.createConversation({ title: 'Trip' })
    const bobConv = await bob.join(await aliceConv.invite())
    await aliceConv.send('hello')
    await until(() => texts(bobConv).includes('hello'))
    room = bobConv.id
    // One GC struct over 1,000 of Alice's next outer clocks, as a sync step 2: well formed, and
    // had Bob applied it, Alice's next envelopes would be dropped there as held already.
    const outer = (aliceConv as unknown as { outer: Y.Doc }).outer
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint(e, outer.clientID)
    encoding.writeVarUint(e, Y.getState(outer.store, outer.clientID))
    encoding.writeUint8(e, 0)
    encoding.writeVarUint(e, 1000)
    encoding.writeVarUint(e, 0)
    const update = encoding.toUint8Array(e)
    parseUpdate(update)
    inject = [writeSyncMessage(SyncStep.Step2, update), writeSyncMessage(SyncStep.Update, update)]
    // Something for the proxy to send them after.
    await aliceConv.send('before the lie')
    await until(() => errorsOf(bob).filter((x) => x.includes('history outside rows')).length === 2, 10_000, 'bob refuses both')
    const m = await aliceConv.send('after the lie')
    await until(() => texts(bobConv).includes('after the lie'), 10_000, 'bob shows it')
    await until(() => aliceConv.message(m.id)?.status === 'delivered', 10_000, '✓✓')
  })
})
