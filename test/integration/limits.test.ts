import { connect } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { decodeInviteToken } from '../../src/client/invite-token.js'
import { recordAllowance } from '../../src/relay/limits.js'
import { SignatureDomain, signWithDomain } from '../../src/shared/crypto/index.js'
import { AdmissionKind, encodeAdmission, encodeJoinBody, encodeRecord, readInviteBody, readRecord, RecordKind, recordSigningPayload } from '../../src/shared/records.js'
import { randomBytes } from '../../src/shared/crypto/index.js'
import { sealEnvelope } from '../../src/shared/envelope.js'
import { envelopeKey } from '../../src/shared/outer-keys.js'
import { readRefused, RoomMessage, SyncStep, writeSyncMessage } from '../../src/shared/room-messages.js'
import { CloseCode, FrameType, Reason, StrictReader, writeFrame } from '../../src/shared/wire.js'
import { openNewRoom, pair, rawDevice, rotateUntilRefused, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

/** Limits under which 20 messages of ~200 bytes fill a conversation. */
const SMALL_QUOTA = { maxRoomBytes: 6_000 }

/**
 * A new world with a relay under SMALL_QUOTA, Alice and Bob in one conversation, and Alice's
 * sends past the quota: some of her 20 fillers failed.
 */
async function fullConversation() {
  world = new World()
  const relay = await world.relay({ limits: SMALL_QUOTA })
  const people = await pair(world)
  for (let i = 0; i < 20; i++) await people.aliceConv.send(`filler ${i} ${'x'.repeat(200)}`)
  await until(() => people.aliceConv.messages().some((m) => m.status === 'failed'), 5000, 'quota reached')
  return { relay, ...people }
}

describe('abuse limits', () => {
  it('drops frames past the per-connection rate and cuts off a sender that keeps going (4429)', async () => {
    world = new World()
    const relay = await world.relay({ limits: { framesPerSecond: 20, frameBurst: 50 } })
    const dev = await rawDevice(world.url)
    for (let i = 0; i < 200 && dev.closed() === undefined; i++) dev.ws.send(writeFrame({ type: FrameType.Heartbeat }))
    await until(() => dev.closed() !== undefined)
    expect(dev.closed()?.code).toBe(CloseCode.RateLimited)
    expect(relay.metrics.rejectedCount('rate limited')).toBeGreaterThan(0)
  })

  it('answers HTTP 429 to connections past the per-address limit', async () => {
    world = new World()
    const relay = await world.relay({ limits: { maxConnectionsPerIp: 2 } })
    const a = await rawDevice(world.url)
    const b = await rawDevice(world.url)
    const status = await new Promise<number>((resolve) => {
      const ws = new WebSocket(world.url)
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
      ws.on('error', () => {})
    })
    expect(status).toBe(429)
    expect(relay.metrics.rejectedCount('too many connections from one address')).toBe(1)
    a.ws.close()
    await until(() => a.closed() !== undefined)
    const c = await rawDevice(world.url)
    c.ws.close()
    b.ws.close()
  })

  it('refuses conversations past the per-device limit', async () => {
    world = new World()
    await world.relay({ limits: { maxRoomsPerConnection: 2 } })
    const alice = await world.client('alice')
    await until(() => alice.connection === 'online')
    const convs = [await alice.createConversation(), await alice.createConversation(), await alice.createConversation()]
    const errors = world.errors.get(alice)!
    await until(() => errors.some((e) => /too many/.test(e.message)), 5000, 'third refused')
    expect(convs.filter((c) => c.synced).length).toBeLessThanOrEqual(2)
  })

  it('refuses envelopes once a conversation holds its byte quota: they fail, nothing else breaks', async () => {
    world = new World()
    await world.relay({ limits: { maxRoomBytes: 6_000 } })
    const { aliceConv, bobConv } = await pair(world)
    const sent = []
    for (let i = 0; i < 20; i++) sent.push(await aliceConv.send(`filler ${i} ${'x'.repeat(200)}`))
    await until(() => aliceConv.messages().some((m) => m.status === 'failed'), 5000, 'quota reached')
    const failed = aliceConv.messages().filter((m) => m.status === 'failed')
    expect(failed[0]!.error).toMatch(/quota exceeded/)
    // Everything the relay did store reached Bob; the refused ones never will.
    const stored = aliceConv.messages().filter((m) => m.status !== 'failed' && m.status !== 'pending').length
    await until(() => texts(bobConv).length >= stored, 5000, 'bob has what was stored')
    expect(texts(bobConv).some((t) => failed.some((f) => f.text === t))).toBe(false)
  })

  it('keeps a full conversation full: later sends fail once each, and an admin can still remove a member', async () => {
    const { relay, bob, aliceConv, bobConv } = await fullConversation()
    const rowsWhenFull = relay.metrics.rowsStored
    const later: string[] = []
    for (let i = 0; i < 5; i++) later.push((await aliceConv.send(`later ${i}`)).id)
    await until(() => later.every((id) => aliceConv.message(id)?.status === 'failed'), 5000, 'later sends fail')
    // Nothing more is stored for them, and the refusals stop: a refused message is not
    // tombstoned again when its resend is refused again.
    await new Promise((r) => setTimeout(r, 500))
    const refusals = relay.metrics.rejectedCount('conversation full')
    await new Promise((r) => setTimeout(r, 1000))
    expect(relay.metrics.rejectedCount('conversation full')).toBe(refusals)
    expect(relay.metrics.rowsStored).toBe(rowsWhenFull)
    // Records may go past the quota (by their own allowance): the removal and its new key land.
    const epoch = aliceConv.epoch
    await aliceConv.removeMember(bob.userId)
    await until(() => world.errors.get(bob)!.some((e) => /removed|not a member/.test(e.message)), 5000, 'bob told')
    await until(() => aliceConv.epoch > epoch, 5000, 'a new epoch')
    expect(relay.metrics.rowsStored).toBeGreaterThan(rowsWhenFull)
    expect(texts(bobConv).some((t) => t.startsWith('later'))).toBe(false)
  })

  it('once the conversation has room again, the next send goes, and what failed stays failed and unseen', async () => {
    const { relay: first, alice, aliceConv, bobConv } = await fullConversation()
    const full = await aliceConv.send('while full')
    await until(() => aliceConv.message(full.id)?.status === 'failed', 5000, 'refused')
    const failed = aliceConv.messages().filter((m) => m.status === 'failed')
    // The operator raises the quota (compaction frees room the same way).
    await first.close()
    await world.relay()
    await until(() => alice.connection === 'online', 10_000, 'alice back')
    const next = await aliceConv.send('room again')
    await until(() => texts(bobConv).includes('room again'), 10_000, 'bob has the next message')
    // The resend that carried it stored the failed ones too, with their tombstones: Bob shows none.
    await new Promise((r) => setTimeout(r, 300))
    expect(texts(bobConv).filter((t) => failed.some((f) => f.text === t))).toEqual([])
    expect(failed.every((f) => aliceConv.message(f.id)?.status === 'failed')).toBe(true)
    expect(aliceConv.message(next.id)?.status).not.toBe('failed')
  })

  it('counts records as the store does, so a restart leaves a full conversation the same room for records', { timeout: 90_000 }, async () => {
    /** Rotations a full conversation takes before its records' allowance refuses one, the relay restarted after the tenth or not. */
    const rotationsUntilRefused = async (restart: boolean): Promise<number> => {
      const { relay, alice, aliceConv, bobConv } = await fullConversation()
      let done = 0
      if (restart) {
        for (; done < 10; done++) {
          const epoch = bobConv.epoch
          await aliceConv.rotateKey()
          await until(() => bobConv.epoch > epoch, 5000, `rotation ${done}`)
        }
        await relay.close()
        await world.relay({ limits: SMALL_QUOTA })
        await until(() => alice.connection === 'online', 10_000, 'back')
      }
      done += await rotateUntilRefused(aliceConv, bobConv)
      await world.close()
      return done
    }
    const straight = await rotationsUntilRefused(false)
    const restarted = await rotationsUntilRefused(true)
    expect(straight).toBeGreaterThan(20)
    expect(Math.abs(restarted - straight)).toBeLessThanOrEqual(2)
  })

  it('refuses new people once a full conversation is past its records’ allowance: joins store nothing', { timeout: 90_000 }, async () => {
    world = new World()
    const maxRoomBytes = 6_000
    const relay = await world.relay({ limits: { maxRoomBytes } })
    const { aliceConv, bobConv } = await pair(world)
    const token = await aliceConv.invite()
    await rotateUntilRefused(aliceConv, bobConv)
    await new Promise((r) => setTimeout(r, 300))
    const room = aliceConv.id
    const bound = maxRoomBytes + recordAllowance({ maxRoomBytes })
    // Anyone holding the invite joins, again and again, as new people. The refused rotation may
    // have left the room a few hundred bytes under the bound (an epoch record did not fit, a
    // join may): from the first join refused as full, every one is, and nothing more is stored.
    const invite = decodeInviteToken(token)
    const inv = readInviteBody(readRecord(invite.inviteRecord).body)
    let firstRefused = -1
    let full = 0
    for (let i = 0; i < 40; i++) {
      const dev = await rawDevice(world.url)
      const joinBody = encodeJoinBody({ room, invitePub: inv.invitePub, joiner: dev.certificate, joinedAt: Date.now() })
      const join = encodeRecord(RecordKind.Join, joinBody, new Uint8Array(0), await signWithDomain(SignatureDomain.Join, invite.inviteSecret, recordSigningPayload(RecordKind.Join, joinBody)))
      dev.ws.send(writeFrame({ type: FrameType.Open, room, admission: encodeAdmission({ kind: AdmissionKind.Join, invite: invite.inviteRecord, join }) }))
      await until(() => dev.frames.some((f) => (f.type === FrameType.Opened || f.type === FrameType.Denied) && f.room === room), 5000, `join ${i}`)
      const denied = dev.frames.find((f) => f.type === FrameType.Denied)
      if (firstRefused < 0 && denied) {
        firstRefused = i
        full = await relay.store.roomBytes(room)
        expect(full).toBeGreaterThanOrEqual(bound)
      }
      if (firstRefused >= 0) expect(denied, `join ${i}`).toMatchObject({ reason: Reason.QuotaExceeded })
      dev.ws.close()
    }
    expect(firstRefused).toBeGreaterThanOrEqual(0)
    expect(firstRefused).toBeLessThanOrEqual(2)
    // Nothing more: at most the blank of the inviter's welcome for a join admitted just under
    // the bound (its add record refused for good keeps a few bytes in its place).
    const after = await relay.store.roomBytes(room)
    expect(after - full).toBeLessThan(64)
  })

  it('refuses a record past the allowance for good: stored later, devices would disagree on the epoch', { timeout: 90_000 }, async () => {
    world = new World()
    const first = await world.relay({ limits: { maxRoomBytes: 6_000 } })
    const { alice, aliceConv, bobConv } = await pair(world)
    await rotateUntilRefused(aliceConv, bobConv)
    await until(() => aliceConv.epoch === bobConv.epoch, 5000, 'the refused epoch undone')
    // The operator raises the quota; Alice's next sync resends what the relay did not store.
    await first.close()
    await world.relay()
    await until(() => alice.connection === 'online', 10_000, 'alice back')
    const next = await aliceConv.send('room again')
    await until(() => texts(bobConv).includes('room again') && aliceConv.message(next.id)?.status === 'delivered', 10_000, 'delivered')
    expect(aliceConv.epoch).toBe(bobConv.epoch)
  })

  it('stores nothing at all past twice the records’ allowance, and refuses no item: the writes stay pending', { timeout: 60_000 }, async () => {
    world = new World()
    const relay = await world.relay({ limits: { maxRoomBytes: 1 } })
    const a = await rawDevice(world.url)
    const room = await openNewRoom(a)
    const refusals = () =>
      a.frames.flatMap((f) => (f.type === FrameType.Room && f.message[0] === RoomMessage.Refused ? [readRefused(new StrictReader(f.message.subarray(1)))] : []))
    // A member floods the room with records it refuses: those within the allowance are refused as
    // forbidden (counted whole), those past it are refused for quota (a placeholder each).
    const doc = new Y.Doc()
    const rec = doc.getMap<Uint8Array>('rec')
    doc.transact(() => {
      for (let i = 0; i < 40_000; i++) rec.set(envelopeKey(doc.clientID, i), Uint8Array.of(i & 0xff))
    })
    a.ws.send(writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Update, Y.encodeStateAsUpdate(doc)) }))
    await until(() => refusals().some((r) => r.reason === Reason.QuotaExceededForGood), 20_000, 'the flood refused')
    await until(() => relay.metrics.rowsStored > 0, 10_000, 'its placeholders stored')
    const rows = relay.metrics.rowsStored
    // Past twice the allowance: an envelope is refused with no range (nothing of it fails), and
    // nothing more is stored.
    const before = refusals().length
    const envelope = await sealEnvelope({ room, epoch: 0, key: randomBytes(32), senderDevicePub: a.device.publicKey, senderDeviceSecret: a.device.secretKey, update: Uint8Array.of(1) })
    const next = new Y.Doc()
    next.getMap<Uint8Array>('log').set(envelopeKey(next.clientID, 0), envelope)
    a.ws.send(writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Update, Y.encodeStateAsUpdate(next)) }))
    await until(() => refusals().length > before, 5000, 'refused')
    expect(refusals().at(-1)).toMatchObject({ reason: Reason.QuotaExceeded, ranges: [] })
    expect(relay.metrics.rowsStored).toBe(rows)
    a.ws.close()
  })

  it('after a key rotation in a full conversation and room again, the next message shows at the others', { timeout: 60_000 }, async () => {
    const { relay: first, alice, aliceConv, bobConv } = await fullConversation()
    const full = await aliceConv.send('while full')
    await until(() => aliceConv.message(full.id)?.status === 'failed', 5000, 'refused')
    // The rotation's record goes past the quota (the records' allowance), with blanks for the
    // refused messages and their tombstones before it: the tombstones must go again.
    const epoch = aliceConv.epoch
    await aliceConv.rotateKey()
    await until(() => bobConv.epoch > epoch, 5000, 'bob has the new epoch')
    await first.close()
    await world.relay()
    await until(() => alice.connection === 'online', 10_000, 'alice back')
    await aliceConv.send('room again')
    await until(() => texts(bobConv).includes('room again'), 10_000, 'bob has the next message')
    expect(texts(bobConv)).not.toContain('while full')
  })

  it('delivers a title change refused in a full conversation once there is room: the others show what the author shows', { timeout: 60_000 }, async () => {
    const { relay: first, alice, aliceConv, bobConv } = await fullConversation()
    await aliceConv.setInner((doc) => doc.getMap('meta').set('title', 'Trip 2'))
    await until(() => world.errors.get(alice)!.some((e) => /quota/.test(e.message) && /refused/.test(e.message)), 5000, 'title refused')
    await first.close()
    await world.relay()
    await until(() => alice.connection === 'online', 10_000, 'alice back')
    await aliceConv.send('room again')
    await until(() => texts(bobConv).includes('room again') && bobConv.title === 'Trip 2', 10_000, 'bob has both')
    // Nothing sent after deletes it there (a tombstone of it once did).
    await new Promise((r) => setTimeout(r, 500))
    expect(bobConv.title).toBe('Trip 2')
    expect(aliceConv.title).toBe('Trip 2')
  })

  it('stores nothing for a member who writes past the quota from thousands of new client ids', async () => {
    world = new World()
    const relay = await world.relay({ limits: { maxRoomBytes: 1 } })
    const a = await rawDevice(world.url)
    const room = await openNewRoom(a)
    const rowsBefore = relay.metrics.rowsStored
    const envelope = await sealEnvelope({ room, epoch: 0, key: randomBytes(32), senderDevicePub: a.device.publicKey, senderDeviceSecret: a.device.secretKey, update: Uint8Array.of(1) })
    const refusals = () => a.frames.filter((f) => f.type === FrameType.Room && f.message[0] === RoomMessage.Refused).length
    // 5 frames, each of 2,000 new client ids with one envelope each: before, 10,000 rows and
    // 10,000 client bindings were stored for a quota of one byte.
    for (let frame = 0; frame < 5; frame++) {
      const doc = new Y.Doc()
      const log = doc.getMap<Uint8Array>('log')
      for (let i = 0; i < 2_000; i++) {
        doc.clientID = 1_000_000 + frame * 10_000 + i
        log.set(envelopeKey(doc.clientID, 0), envelope)
      }
      a.ws.send(writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Update, Y.encodeStateAsUpdate(doc)) }))
    }
    await until(() => refusals() >= 5, 10_000, 'every frame refused')
    expect(relay.metrics.rowsStored).toBe(rowsBefore)
    expect(a.closed()).toBeUndefined()
    a.ws.close()
  })

  it('closes a connection that sends its HTTP headers too slowly (slowloris)', async () => {
    world = new World()
    await world.relay({ limits: { headersTimeoutMs: 500 } })
    const t0 = Date.now()
    const closedAfter = await new Promise<number>((resolve) => {
      const socket = connect(world.port, '127.0.0.1', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\n'))
      socket.on('data', () => {})
      socket.on('close', () => resolve(Date.now() - t0))
      socket.on('error', () => {})
    })
    expect(closedAfter).toBeLessThan(3000)
  })

  it('shuts down at once when a peer it closed never answers the close (ws would wait 30 s)', { timeout: 40_000 }, async () => {
    world = new World()
    const relay = await world.relay({ limits: { authTimeoutMs: 200 } })
    const ws = new WebSocket(world.url)
    ws.on('error', () => {})
    await new Promise((resolve) => ws.once('open', resolve))
    // The peer stops reading: it never sees the relay's close frame, so it never answers it.
    ;(ws as unknown as { _socket: { pause(): void } })._socket.pause()
    await until(() => relay.metrics.connections === 0, 3000, 'closed for not authenticating')
    const t0 = Date.now()
    await relay.close()
    expect(Date.now() - t0).toBeLessThan(3000)
    ws.terminate()
  })

  it('paces catch-ups by what the socket reads, and cuts off a connection that stops reading', { timeout: 60_000 }, async () => {
    world = new World()
    const relay = await world.relay({ limits: { sendStallMs: 2_000 } })
    const a = await rawDevice(world.url)
    const room = await openNewRoom(a)
    // 8 MB of history: 32 envelopes of 250 KB.
    const doc = new Y.Doc()
    const key = randomBytes(32)
    const acks = () => a.frames.filter((f) => f.type === FrameType.Room && f.message[0] === RoomMessage.Ack).length
    for (let i = 0; i < 32; i++) {
      const envelope = await sealEnvelope({ room, epoch: 0, key, senderDevicePub: a.device.publicKey, senderDeviceSecret: a.device.secretKey, update: randomBytes(250_000) })
      const sv = Y.encodeStateVector(doc)
      doc.getMap<Uint8Array>('log').set(envelopeKey(doc.clientID, Y.getState(doc.store, doc.clientID)), envelope)
      a.ws.send(writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Update, Y.encodeStateAsUpdate(doc, sv)) }))
      await until(() => acks() >= i + 1, 10_000, `ack ${i}`)
    }
    // A second connection of the device opens the room, stops reading, and asks for the whole
    // history 40 times (29 bytes each): 320 MB queued in the relay's memory before.
    const b = await rawDevice(world.url, { user: a.user, device: a.device, certificate: a.certificate })
    b.ws.send(writeFrame({ type: FrameType.Open, room, admission: new Uint8Array(0) }))
    await until(() => b.frames.some((f) => f.type === FrameType.Opened))
    ;(b.ws as unknown as { _socket: { pause(): void } })._socket.pause()
    const before = process.memoryUsage().arrayBuffers
    let peak = before
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().arrayBuffers)
    }, 20)
    const step1 = writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Step1, Uint8Array.of(0)) })
    for (let i = 0; i < 40; i++) b.ws.send(step1)
    try {
      await until(() => relay.metrics.rejectedCount('send stalled') >= 1, 15_000, 'the stalled connection cut off')
    } finally {
      clearInterval(sampler)
    }
    expect(peak - before).toBeLessThan(64 * 1024 * 1024)
    // The device's other connection never noticed.
    const c = await rawDevice(world.url, { user: a.user, device: a.device, certificate: a.certificate })
    c.ws.send(writeFrame({ type: FrameType.Open, room, admission: new Uint8Array(0) }))
    await until(() => c.frames.some((f) => f.type === FrameType.Opened))
    a.ws.send(writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Step1, Uint8Array.of(0)) }))
    await until(() => a.frames.filter((f) => f.type === FrameType.Room && f.message[0] === RoomMessage.Rows).length >= 1, 10_000, 'a caught up again')
    for (const d of [a, b, c]) d.ws.close()
  })

  it("cuts off a member's connection that stops reading once its unsent bytes pass the limit; back, it catches up", { timeout: 60_000 }, async () => {
    world = new World()
    const relay = await world.relay({ limits: { maxSendBufferBytes: 2 * 1024 * 1024 } })
    const { alice, aliceConv, bobConv } = await pair(world)
    await aliceConv.send('before')
    await until(() => texts(bobConv).includes('before'))
    const socket = (bobConv as unknown as { ctx: { connection: { ws: { _socket: { pause(): void; resume(): void } } } } }).ctx.connection.ws._socket
    socket.pause()
    const big = 'x'.repeat(60_000)
    // The kernel's socket buffers take several MB first.
    for (let i = 0; i < 500 && relay.metrics.rejectedCount('send buffer full') === 0; i++) await aliceConv.send(`${i} ${big}`)
    await until(() => relay.metrics.rejectedCount('send buffer full') === 1, 10_000, 'bob cut off')
    expect(alice.connection).toBe('online')
    socket.resume()
    const sent = aliceConv.messages().length
    await until(() => bobConv.messages().length === sent, 20_000, 'bob caught up')
    expect(texts(bobConv)).toEqual(texts(aliceConv))
  })

  it('closes an authenticated connection that goes silent (half-open)', async () => {
    world = new World()
    await world.relay({ limits: { heartbeatMs: 100, idleTimeoutMs: 400 } })
    const dev = await rawDevice(world.url)
    await until(() => dev.closed() !== undefined, 3000)
    expect(dev.closed()?.code).toBe(CloseCode.GoingAway)
  })
})

describe('a full conversation and a member removed while away', () => {
  it('tells the member, back, that he was removed (final), not that it is full for now', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv, invite } = await pair(world)
    bob.disconnect()
    await until(() => bob.connection === 'offline')
    const offline = await bobConv.send('bob, offline')
    for (let i = 0; i < 10; i++) await aliceConv.send(`${i}`.padEnd(8000, 'x'))
    await aliceConv.removeMember(bob.userId)
    await until(() => aliceConv.epoch === 1 && aliceConv.messages().every((m) => m.status !== 'pending'), 10_000, 'removed, all stored')
    const relayHolds = async (kind: number) => ((await world.relays[0]!.store.loadRoom(aliceConv.id))?.records ?? []).some((b) => readRecord(b).kind === kind)
    await until(() => relayHolds(RecordKind.Epoch), 10_000, 'the relay stored the removal and the new key')
    alice.disconnect()
    // The operator lowers the quota below what the conversation holds.
    await world.relays[0]!.close()
    await world.relay({ limits: { maxRoomBytes: 1000 } })
    bob.connect()
    await until(() => bobConv.message(offline.id)?.status === 'failed', 10_000, 'his offline send failed')
    expect(world.errors.get(bob)!.map((e) => [e.code, e.message])).toEqual([['refused', 'relay refused the conversation: not member: removed from the conversation']])
    await expect(bobConv.send('bob, after')).rejects.toMatchObject({ code: 'refused' })
    // A new join record by the invite he joined with (made before the removal): removed too.
    await expect(bob.join(invite)).rejects.toMatchObject({ code: 'refused', message: expect.stringContaining('removed from the conversation') })
  }, 40_000)
})
