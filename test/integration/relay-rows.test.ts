/**
 * How the relay turns a device's updates into stored rows: a device that pipelines updates
 * (one envelope each) gets them stored as few rows, each acknowledged once, without a clock
 * lost, duplicated or reordered.
 */
import * as Y from 'yjs'
import { afterEach, describe, expect, it } from 'vitest'
import { randomBytes, randomKey } from '../../src/shared/crypto/index.js'
import { sealEnvelope } from '../../src/shared/envelope.js'
import { envelopeKey, OUTER_LOG } from '../../src/shared/outer-keys.js'
import { readAck, readRows, RoomMessage, SyncStep, writeSyncMessage } from '../../src/shared/room-messages.js'
import { type Frame, FrameType, StrictReader, writeFrame } from '../../src/shared/wire.js'
import { openNewRoom, rawDevice, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

type RawDevice = Awaited<ReturnType<typeof rawDevice>>

/** One outer update per envelope, as a device that sends each message on its own would. */
async function envelopeUpdates(dev: RawDevice, room: string, count: number): Promise<{ updates: Uint8Array[]; envelopes: Uint8Array[]; client: number }> {
  const doc = new Y.Doc()
  const updates: Uint8Array[] = []
  const envelopes: Uint8Array[] = []
  doc.on('update', (u: Uint8Array) => updates.push(u))
  const key = randomKey()
  for (let i = 0; i < count; i++) {
    const envelope = await sealEnvelope({ room, epoch: 0, key, senderDevicePub: dev.device.publicKey, senderDeviceSecret: dev.device.secretKey, update: randomBytes(40) })
    envelopes.push(envelope)
    doc.getMap<Uint8Array>(OUTER_LOG).set(envelopeKey(doc.clientID, i), envelope)
  }
  return { updates, envelopes, client: doc.clientID }
}

const roomMessages = (frames: Frame[], type: number) =>
  frames.flatMap((f) => (f.type === FrameType.Room && f.message[0] === type ? [f.message] : []))

const body = (message: Uint8Array) => {
  const r = new StrictReader(message)
  r.pos = 1
  return r
}

describe('relay rows', () => {
  it('stores a pipelined burst of updates as few rows, acknowledging every clock exactly once and in order', async () => {
    world = new World()
    await world.relay()
    const dev = await rawDevice(world.url)
    const room = await openNewRoom(dev)
    const count = 300
    const { updates, envelopes, client } = await envelopeUpdates(dev, room, count)
    // All in one go: the relay reads them while its first commit is on disk.
    for (const u of updates) dev.ws.send(writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Update, u) }))

    const acked = () => roomMessages(dev.frames, RoomMessage.Ack).map((m) => readAck(body(m)))
    await until(() => acked().reduce((n, a) => n + a.ranges.reduce((k, r) => k + r.len, 0), 0) >= count, 10_000, 'every clock acknowledged')
    const acks = acked()
    expect(new Set(acks.flatMap((a) => a.ranges.map((r) => r.client)))).toEqual(new Set([client]))
    const clocks = acks.flatMap((a) => a.ranges.flatMap((r) => Array.from({ length: r.len }, (_, i) => r.clock + i)))
    expect(clocks).toEqual(Array.from({ length: count }, (_, i) => i))
    // One row per ack, numbered in order.
    expect(acks.map((a) => a.seq)).toEqual(acks.map((_, i) => acks[0]!.seq + i))
    expect(acks.length).toBeLessThan(count / 2)
    // A row stops growing at 8 KiB of structs: ~200-byte structs make at most ~41 a row.
    expect(Math.max(...acks.map((a) => a.ranges.reduce((k, r) => k + r.len, 0)))).toBeLessThanOrEqual(45)
    expect(roomMessages(dev.frames, RoomMessage.Refused)).toEqual([])

    // Another connection of the same device reads the room back: every envelope, once, in order.
    const reader = await rawDevice(world.url, dev)
    reader.ws.send(writeFrame({ type: FrameType.Open, room, admission: new Uint8Array(0) }))
    reader.ws.send(writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Step1, Uint8Array.of(0)) }))
    const rowsRead = () => roomMessages(reader.frames, RoomMessage.Rows).map((m) => readRows(body(m)))
    await until(() => rowsRead().reduce((n, r) => n + r.index.reduce((k, e) => k + e.len, 0), 0) >= count, 10_000, 'every row read back')
    const read = rowsRead()
    expect(read.flatMap((r) => r.index.map((e) => e.seq))).toEqual(acks.map((a) => a.seq))
    const copy = new Y.Doc()
    for (const r of read) Y.applyUpdate(copy, r.update)
    const log = copy.getMap<Uint8Array>(OUTER_LOG)
    expect(log.size).toBe(count)
    for (let i = 0; i < count; i++) expect(log.get(envelopeKey(client, i))).toEqual(envelopes[i])
    dev.ws.close()
    reader.ws.close()
  })

  it('keeps arrival order: an update of another client closes the open row, so later ones get later rows', async () => {
    world = new World()
    await world.relay()
    const dev = await rawDevice(world.url)
    const room = await openNewRoom(dev)
    const x = await envelopeUpdates(dev, room, 4)
    const y = await envelopeUpdates(dev, room, 1)
    // One socket, so this is the order the relay reads them in: x0 x1 y0 x2 x3.
    for (const u of [x.updates[0]!, x.updates[1]!, y.updates[0]!, x.updates[2]!, x.updates[3]!]) {
      dev.ws.send(writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Update, u) }))
    }
    const acked = () => roomMessages(dev.frames, RoomMessage.Ack).map((m) => readAck(body(m)))
    await until(() => acked().reduce((n, a) => n + a.ranges.reduce((k, r) => k + r.len, 0), 0) >= 5, 10_000, 'every clock acknowledged')
    const rowOf = (client: number, clock: number) =>
      acked().find((a) => a.ranges.some((r) => r.client === client && r.clock <= clock && clock < r.clock + r.len))!.seq
    // x0 and y0 bind their clients (rows of their own); x1 opens a row.
    expect(rowOf(x.client, 1)).toBeGreaterThan(rowOf(x.client, 0))
    expect(rowOf(y.client, 0)).toBeGreaterThan(rowOf(x.client, 1))
    // x2 came after y0: it may not join x1's row, which comes before y0's.
    expect(rowOf(x.client, 2)).toBeGreaterThan(rowOf(y.client, 0))
    expect(rowOf(x.client, 3)).toBe(rowOf(x.client, 2))
    dev.ws.close()
  })
})
