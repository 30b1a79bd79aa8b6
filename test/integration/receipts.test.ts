import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { openSqliteStore } from '../../src/client/storage/sqlite-store.js'
import { writeDeviceAck } from '../../src/shared/room-messages.js'
import { pair, texts, until, World } from './harness.js'
import { HoldProxy } from './hold-proxy.js'

let world: World
afterEach(async () => {
  await world?.close()
})

const statusOf = (conv: { message(id: string): { status: string } | undefined }, id: string) => conv.message(id)?.status

describe('receipts', () => {
  it('1:1 — delivered within a second while Bob is online, read after Bob marks it read', async () => {
    world = new World()
    await world.relay()
    const { aliceConv, bobConv } = await pair(world)
    const seen: string[] = []
    const m = await aliceConv.send('hi')
    aliceConv.subscribe(() => {
      const s = statusOf(aliceConv, m.id)!
      if (seen.at(-1) !== s) seen.push(s)
    })
    await until(() => statusOf(aliceConv, m.id) === 'delivered', 1000, 'delivered')
    expect(aliceConv.unreadCount()).toBe(0)
    expect(bobConv.unreadCount()).toBe(1)
    await bobConv.markRead()
    expect(bobConv.unreadCount()).toBe(0)
    await until(() => statusOf(aliceConv, m.id) === 'read', 1000, 'read')
    // Every step, in order, never backwards.
    const order = ['pending', 'sent', 'delivered', 'read']
    expect(seen).toEqual(order.slice(order.indexOf(seen[0]!)))
    expect(seen.at(-1)).toBe('read')
    const info = aliceConv.receipts(m.id)
    expect(info).toHaveLength(1)
    expect(bobConv.memberIds()).toContain(info[0]!.member)
    expect(info[0]!.deliveredAt).toBeTypeOf('number')
    expect(info[0]!.readAt).toBeGreaterThanOrEqual(info[0]!.deliveredAt!)
  })

  it('reaches read when the recipient joined with a clock running an hour ahead of the sender’s (relay order, not clocks, says who was a member)', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    const bob = await world.client('bob')
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    const aliceConv = await alice.createConversation({ title: 'skew' })
    const invite = await aliceConv.invite()
    // Bob's device clock runs an hour fast as he joins: his join record says so.
    const realNow = Date.now
    Date.now = () => realNow() + 3_600_000
    let bobConv: Awaited<ReturnType<typeof bob.join>>
    try {
      bobConv = await bob.join(invite)
    } finally {
      Date.now = realNow
    }
    expect(aliceConv.membershipState.members.get(bob.userId)?.joinedAt).toBeGreaterThan(Date.now() + 3_000_000)
    const m = await aliceConv.send('sent after he joined')
    await until(() => texts(bobConv).includes('sent after he joined'), 5000, 'bob has it')
    await bobConv.markRead()
    await until(() => statusOf(aliceConv, m.id) === 'read', 5000, 'read')
    expect(aliceConv.receipts(m.id).map((r) => r.member)).toEqual([bob.userId])
  })

  it('moves the ticks of a list already shown, keeping its order and the messages of others as the same objects', async () => {
    world = new World()
    await world.relay()
    const { aliceConv, bobConv } = await pair(world)
    await bobConv.send('from bob')
    await until(() => texts(aliceConv).includes('from bob'))
    const listed = (id: string) => aliceConv.messages().find((m) => m.id === id)?.status
    const seen: string[] = []
    const mine = await aliceConv.send('mine')
    // The app reads the list on every change, as a UI does; acks and receipts change only ticks.
    aliceConv.subscribe(() => {
      const s = listed(mine.id)!
      if (seen.at(-1) !== s) seen.push(s)
    })
    const bobsMessage = aliceConv.messages()[0]!
    await until(() => listed(mine.id) === 'delivered', 5000, 'delivered in the list')
    await bobConv.markRead()
    await until(() => listed(mine.id) === 'read', 5000, 'read in the list')
    expect(seen.at(-1)).toBe('read')
    const order = ['pending', 'sent', 'delivered', 'read']
    expect(seen).toEqual(order.slice(order.indexOf(seen[0]!)))
    expect(texts(aliceConv)).toEqual(['from bob', 'mine'])
    expect(aliceConv.messages()[0]).toBe(bobsMessage)
    expect(aliceConv.messages()[1]!.status).toBe(statusOf(aliceConv, mine.id))
  })

  it('shows read to a sender who was offline while Bob read, after Bob left', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    const m = await aliceConv.send('read me later')
    await until(() => texts(bobConv).includes('read me later'))
    alice.disconnect()
    await bobConv.markRead()
    await new Promise((r) => setTimeout(r, 200))
    await bob.close()
    expect(statusOf(aliceConv, m.id)).not.toBe('read')
    alice.connect()
    await until(() => statusOf(aliceConv, m.id) === 'read', 5000, 'read after reconnect')
  })

  it("stays at sent while Bob is offline, delivered once Bob's device stores it", async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv } = await pair(world)
    const convId = bobConv.id
    await bob.close()
    const m = await aliceConv.send('while you were away')
    await until(() => statusOf(aliceConv, m.id) === 'sent')
    await new Promise((r) => setTimeout(r, 300))
    expect(statusOf(aliceConv, m.id)).toBe('sent')
    const bob2 = await world.client('bob')
    const conv = (await bob2.conversations()).find((c) => c.id === convId)!
    await until(() => texts(conv).includes('while you were away'))
    await until(() => statusOf(aliceConv, m.id) === 'delivered', 5000, 'delivered')
  })

  /**
   * Alice's message is stored before Bob's, but its row reaches Bob after the ✓ for his own:
   * what a relay node does with rows another node stored (scale-out). Bob's device must not
   * count Alice's row as held because a later position of its own was acknowledged.
   */
  async function ownAckOvertakesRow() {
    world = new World()
    await world.relay()
    const proxy = await HoldProxy.start(world.url)
    const alice = await world.client('alice')
    const bob = await world.client('bob', { relay: proxy.url })
    await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'clients online')
    const aliceConv = await alice.createConversation({ title: 'Held' })
    const bobConv = await bob.join(await aliceConv.invite())
    const hello = await bobConv.send('hello')
    await until(() => statusOf(bobConv, hello.id) === 'delivered', 5000, "bob's hello delivered to alice")
    proxy.holdRows()
    const held = await aliceConv.send('held on the way')
    await until(() => statusOf(aliceConv, held.id) === 'sent' && proxy.heldRows > 0, 5000, "alice's row stored and held")
    const own = await bobConv.send('mine came back first')
    await until(() => statusOf(bobConv, own.id) !== 'pending', 5000, "bob's ✓")
    return { proxy, alice, bob, aliceConv, bobConv, held }
  }

  it('is not delivered by a device whose own ✓ overtook the row, until the row arrives', async () => {
    const { proxy, aliceConv, bobConv, held } = await ownAckOvertakesRow()
    // Bob acknowledges at most every 50 ms; a false ✓✓ reached Alice well within this.
    await new Promise((r) => setTimeout(r, 600))
    expect(texts(bobConv)).not.toContain('held on the way')
    expect(statusOf(aliceConv, held.id)).toBe('sent')
    proxy.release()
    await until(() => texts(bobConv).includes('held on the way'), 5000, 'bob holds the row')
    await until(() => statusOf(aliceConv, held.id) === 'delivered', 5000, 'delivered once bob stores it')
    await proxy.close()
  })

  it('still fetches such a row after a restart while it was held', async () => {
    const { proxy, bob, aliceConv, bobConv, held } = await ownAckOvertakesRow()
    const convId = bobConv.id
    await new Promise((r) => setTimeout(r, 300))
    await bob.close()
    await proxy.close()
    // Straight to the relay this time: the row is only at the relay.
    const bob2 = await world.client('bob')
    const conv = (await bob2.conversations()).find((c) => c.id === convId)!
    await until(() => texts(conv).includes('held on the way'), 5000, 'bob fetches the held row after restarting')
    await until(() => statusOf(aliceConv, held.id) === 'delivered', 5000, 'delivered')
  })

  it('in a group of three, is delivered only when both others have it, with per-member times', async () => {
    world = new World()
    await world.relay()
    const { aliceConv, bobConv, invite, bob } = await pair(world)
    const carol = await world.client('carol')
    const carolConv = await carol.join(invite)
    const convId = carolConv.id
    await carol.close()
    const m = await aliceConv.send('group hello')
    await until(() => texts(bobConv).includes('group hello'))
    await new Promise((r) => setTimeout(r, 300))
    expect(statusOf(aliceConv, m.id)).toBe('sent')
    const info = aliceConv.receipts(m.id)
    expect(info).toHaveLength(2)
    expect(info.find((r) => r.member === bob.userId)!.deliveredAt).toBeTypeOf('number')
    expect(info.find((r) => r.member !== bob.userId)!.deliveredAt).toBeUndefined()
    const carol2 = await world.client('carol')
    const c2 = (await carol2.conversations()).find((c) => c.id === convId)!
    await until(() => texts(c2).includes('group hello'))
    await until(() => statusOf(aliceConv, m.id) === 'delivered', 5000, 'delivered to both')
    await bobConv.markRead()
    await new Promise((r) => setTimeout(r, 300))
    expect(statusOf(aliceConv, m.id)).toBe('delivered')
    await c2.markRead()
    await until(() => statusOf(aliceConv, m.id) === 'read', 5000, 'read by both')
  })

  it('moves the ticks of a shown message when the member it waited for is removed, and not when the key only rotates', async () => {
    world = new World()
    await world.relay()
    const { aliceConv, bobConv, invite } = await pair(world)
    const carol = await world.client('carol')
    await carol.join(invite)
    await until(() => aliceConv.members().length === 3, 5000, 'carol in')
    const carolId = carol.userId
    await carol.close()
    const m = await aliceConv.send('waiting for carol')
    await until(() => texts(bobConv).includes('waiting for carol'))
    const listed = () => aliceConv.messages().find((x) => x.id === m.id)?.status
    await until(() => aliceConv.receipts(m.id).some((r) => r.deliveredAt !== undefined), 5000, 'bob has it')
    expect(listed()).toBe('sent')
    // A rotation changes no one's membership: the message stays the same object, still 'sent'.
    const shown = () => aliceConv.messages().find((x) => x.id === m.id)
    const before = shown()
    await aliceConv.rotateKey()
    await until(() => aliceConv.membershipState.epoch >= 1, 5000, 'rotated')
    expect(shown()).toBe(before)
    expect(listed()).toBe('sent')
    // Carol removed: Bob is the only one it waited for, and he has it.
    await aliceConv.removeMember(carolId)
    await until(() => listed() === 'delivered', 5000, 'delivered in the list once carol is gone')
  })

  it('survives a relay restart and a reload of every client', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    const convId = aliceConv.id
    const m = await aliceConv.send('durable receipts')
    await until(() => texts(bobConv).includes('durable receipts'))
    await bobConv.markRead()
    await until(() => statusOf(aliceConv, m.id) === 'read')
    await alice.close()
    await bob.close()
    await world.relays.at(-1)!.close()
    // Offline reload: the statuses come from local storage.
    const alice2 = await world.client('alice')
    const a2 = (await alice2.conversations()).find((c) => c.id === convId)!
    expect(statusOf(a2, m.id)).toBe('read')
    await alice2.close()
    // Forget them locally: after the relay's restart they come back from its database.
    const store = await openSqliteStore(join(world.dir, 'alice.db'))
    await store.commit({ put: [[`rcpt:${convId}`, null]] })
    await store.close()
    const alice3 = await world.client('alice')
    const a3 = (await alice3.conversations()).find((c) => c.id === convId)!
    expect(statusOf(a3, m.id)).toBe('sent')
    // The list, shown before the receipts come back, moves its ticks too (its positions came from storage).
    const listed = () => a3.messages().find((x) => x.id === m.id)?.status
    expect(listed()).toBe('sent')
    await world.relay()
    await until(() => statusOf(a3, m.id) === 'read', 5000, 'read again from the relay')
    await until(() => listed() === 'read', 1000, 'read in the list after the reload')
    const bob2 = await world.client('bob')
    const b2 = (await bob2.conversations()).find((c) => c.id === convId)!
    expect(b2.unreadCount()).toBe(0)
  })

  it('with readReceipts off on Bob: Alice never sees read from Bob, Bob sees no read from Alice', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    const bob = await world.client('bob', { readReceipts: false })
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    const aliceConv = await alice.createConversation({ title: 'private' })
    const bobConv = await bob.join(await aliceConv.invite())
    const a = await aliceConv.send('from alice')
    const b = await bobConv.send('from bob')
    await until(() => texts(aliceConv).length === 2 && texts(bobConv).length === 2)
    await bobConv.markRead()
    await aliceConv.markRead()
    await until(() => statusOf(aliceConv, a.id) === 'delivered' && statusOf(bobConv, b.id) === 'delivered')
    await new Promise((r) => setTimeout(r, 300))
    expect(statusOf(aliceConv, a.id)).toBe('delivered')
    expect(statusOf(bobConv, b.id)).toBe('delivered')
    expect(aliceConv.receipts(a.id)[0]!.readAt).toBeUndefined()
  })

  it('refuses and counts an ack a connection makes for another device', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv, bobConv, bob } = await pair(world)
    const m = await aliceConv.send('no forging')
    await until(() => texts(bobConv).includes('no forging'))
    await bob.close()
    // Alice's engine tries to ack as Bob's device.
    const ws = (aliceConv as unknown as { provider: { ws: WebSocket } }).provider.ws
    const bobDevice = bob.deviceId
    ws.send(writeDeviceAck(bobDevice, 999, 999))
    await until(() => relay.metrics.rejectedCount('forged ack') === 1, 2000, 'forged ack counted')
    await new Promise((r) => setTimeout(r, 200))
    expect(statusOf(aliceConv, m.id)).toBe('delivered')
    void alice
  })

  it('shows typing within 500 ms, clears it after the timeout, and keeps its content out of the relay', async () => {
    world = new World()
    const relay = await world.relay()
    const { aliceConv, bobConv } = await pair(world)
    const t0 = Date.now()
    bobConv.setTyping(true)
    await until(() => aliceConv.typing().includes('bob'), 500, 'alice sees bob typing')
    expect(Date.now() - t0).toBeLessThan(500)
    await until(() => aliceConv.typing().length === 0, 8000, 'typing clears')
    await relay.close()
    const files = readdirSync(world.dir).filter((f) => f.startsWith('relay.db'))
    for (const f of files) {
      const bytes = readFileSync(join(world.dir, f))
      expect(bytes.includes(Buffer.from('"t":true'))).toBe(false)
      expect(bytes.includes(Buffer.from('typing'))).toBe(false)
    }
    expect(world.logLines.join('')).not.toContain('"t":true')
  }, 15_000)
})

