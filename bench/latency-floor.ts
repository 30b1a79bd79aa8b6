/**
 * Benchmark 3's floor: the same run as latency-clients.ts (two devices, the sender on this
 * thread and the receiver on a worker, the real relay in a process of its own, the same texts,
 * the same pacing and the same clock), but the devices do only the work every message of this
 * architecture must have done to it, with none of the client's own bookkeeping:
 *
 * - the sender, every `batchMs` (FLOOR_BATCH_MS), writes what was sent into an inner Yjs
 *   document in one transaction under one batch signature (message-signature.ts), seals the update
 *   (XChaCha20-Poly1305 and Ed25519, envelope.ts), sets the envelope into an outer Yjs document,
 *   sends that update to the relay, and appends both updates to a SQLite store on its writer
 *   thread (`synchronous = FULL`) in a commit that may wait for company, as the client does;
 * - the receiver applies each row the relay sends to its outer document, checks the envelope's
 *   sender and signature, decrypts it, applies the inner update, checks the messages'
 *   signatures, appends both to its store (a commit that may wait for company too), and notes
 *   the time each message arrived.
 *
 * Left out, so the floor is low: the outbox and its rows, ticks and receipts, key rotation,
 * history snapshots and their replica thread, the inner updates' structural checks, the shown
 * list and an app that renders it, typing, y-websocket's provider. What the full clients spend
 * beyond this is what their own code costs; what this spends is the machine's price for the
 * architecture: on a machine where this misses a latency goal, the full clients, doing more,
 * can at best meet it as often as it does (BENCHMARKS.md, twenty-eighth session).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import * as Y from 'yjs'
import { createClient } from '../src/client/index.js'
import { INNER_MESSAGE_BATCHES, INNER_MESSAGES } from '../src/client/inner-guard.js'
import { signMessageBatch } from '../src/client/message-signature.js'
import { MERGE_BYTES, sendsForBatch } from '../src/client/seal-chunks.js'
import { openSqliteStore } from '../src/client/storage/sqlite-store.js'
import { randomBytes, randomKey, toBase64Url } from '../src/shared/crypto/index.js'
import { sealEnvelope } from '../src/shared/envelope.js'
import { envelopeKey, OUTER_LOG } from '../src/shared/outer-keys.js'
import { readRefused, RoomMessage, SyncStep, writeSyncMessage } from '../src/shared/room-messages.js'
import { utf8Length } from '../src/shared/utf8-length.js'
import { FrameType, StrictReader, writeFrame } from '../src/shared/wire.js'
import { type ReceiverReply, tidOf, workerReplies } from './common.js'
import type { FloorReceiverData } from './latency-floor-receiver.js'
import { PetrelDevice } from './petrel-device.js'
import { type PacedLatency, PacedSends } from './paced-sends.js'
import { startServer } from './server-process.js'

/** The floor's round: the same figures as the full clients'. */
export type FloorLatencyResult = PacedLatency

/**
 * The sender seals what was sent in the last `batchMs` as one envelope. Per envelope the two
 * devices sign twice, verify twice, make four Yjs transactions and two commits (~0.5 ms of CPU
 * together): one envelope per 1-ms tick took more CPU than the full clients, whose batches grow
 * with the load (conversation.ts `sealerFree`). 4 ms gives ~40 messages an envelope at 10,000/s,
 * the full client's median there (BENCHMARKS.md, twenty-second session).
 */
export const FLOOR_BATCH_MS = 4

export async function latencyFloor(rate: number, seconds: number, warmupSeconds: number, batchMs = FLOOR_BATCH_MS): Promise<FloorLatencyResult> {
  const server = await startServer('petrel')
  const dir = mkdtempSync(join(tmpdir(), 'petrel-bench-floor-'))
  let worker: Worker | undefined
  try {
    // A real client makes the room and an invite, then goes; both lean devices join with it.
    const admin = await createClient({ relay: server.url, name: 'admin', storage: join(dir, 'admin.db') })
    const conv = await admin.createConversation({ title: 'floor' })
    await conv.whenSynced(30_000)
    const invite = await conv.invite({ uses: 3 })
    await admin.close()

    const sender = await PetrelDevice.connect(server.url)
    const failures: unknown[] = []
    // The relay's word on a write it did not take: the receiver would wait for it in vain.
    const room = await sender.join(invite, {
      onMessage: (message) => {
        if (message[0] !== RoomMessage.Refused) return
        const r = new StrictReader(message)
        r.pos = 1
        const { reason, message: why, ranges } = readRefused(r)
        failures.push(new Error(`the relay refused ${JSON.stringify(ranges)}: reason ${reason}, ${why}`))
      },
    })
    const key = randomKey()
    const total = Math.round(rate * (seconds + warmupSeconds))
    const data: FloorReceiverData = { url: server.url, storage: join(dir, 'bob.db'), invite, total, key, senderPub: sender.device.publicKey, senderUserPub: sender.user.publicKey }
    worker = new Worker(new URL('./latency-floor-receiver.js', import.meta.url), { workerData: data })
    const next = workerReplies<ReceiverReply>(worker, 'latency floor')
    const paced = new PacedSends(rate, total, warmupSeconds, server, tidOf(await next()))

    const store = await openSqliteStore(join(dir, 'alice.db'))
    const inner = new Y.Doc()
    const outer = new Y.Doc()
    const messages = inner.getMap(INNER_MESSAGES)
    const batches = inner.getMap(INNER_MESSAGE_BATCHES)
    const log = outer.getMap<Uint8Array>(OUTER_LOG)
    const userId = toBase64Url(sender.user.publicKey)
    const deviceId = toBase64Url(sender.device.publicKey)
    let clock = 0
    let hlc = Date.now()
    let turn: Promise<unknown> = Promise.resolve()

    const sendBatch = async (texts: string[]): Promise<void> => {
      const items = texts.map((t, n) => {
        hlc = Math.max(Date.now(), hlc + 1)
        return { id: `${userId}.${hlc.toString(36).padStart(9, '0')}${toBase64Url(randomBytes(6))}`, m: { t, at: Date.now(), h: hlc, n, d: deviceId } }
      })
      const nonce = toBase64Url(randomBytes(9))
      const entryKey = `${userId}.${nonce}`
      const entry = await signMessageBatch(room, entryKey, items, sender.device.secretKey)
      let innerUpdate: Uint8Array | undefined
      const takeInner = (u: Uint8Array) => (innerUpdate = u)
      inner.on('update', takeInner)
      inner.transact(() => {
        batches.set(entryKey, entry)
        items.forEach(({ id, m }, i) => {
          messages.set(id, { ...m, b: nonce, i })
        })
      })
      inner.off('update', takeInner)
      const envelope = await sealEnvelope({ room, epoch: 0, key, senderDevicePub: sender.device.publicKey, senderDeviceSecret: sender.device.secretKey, update: innerUpdate! })
      let outerUpdate: Uint8Array | undefined
      const takeOuter = (u: Uint8Array) => (outerUpdate = u)
      outer.on('update', takeOuter)
      log.set(envelopeKey(outer.clientID, clock++), envelope)
      outer.off('update', takeOuter)
      sender.ws.send(writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Update, outerUpdate!) }))
      // Stored after it is handed to the relay, as the client does, and as it does, in a commit
      // that may wait for company (`soon`: the store's 20-ms linger). Commits land in order.
      store
        .commit({ append: [{ convId: room, doc: 'inner', bytes: innerUpdate! }, { convId: room, doc: 'outer', bytes: outerUpdate! }] }, { soon: true })
        .catch((err: unknown) => failures.push(err))
    }

    // In order, at most one flush every `batchMs` (or when the last is sent), each in batches
    // the client's size (sendsForBatch): a thread that stalled ~100 ms gathered an envelope
    // the relay refused as too large, and the receiver waited for the rest in vain.
    const pending: Array<{ text: string; bytes: number }> = []
    let flushedAt = 0
    await paced.run(
      (text) => pending.push({ text, bytes: utf8Length(text) }),
      (last) => {
        if (pending.length === 0 || (performance.now() - flushedAt < batchMs && !last)) return
        flushedAt = performance.now()
        while (pending.length > 0) {
          const texts = pending.splice(0, sendsForBatch(pending, MERGE_BYTES)).map((p) => p.text)
          turn = turn.then(() => sendBatch(texts)).catch((err: unknown) => failures.push(err))
        }
      },
    )
    // A sender's failure loses its batch, and the receiver then waits for it in vain: say both.
    await next().catch((err: unknown) => {
      throw failures.length > 0 ? new Error(`${String(err)}; the sender failed first: ${String((failures[0] as Error)?.stack ?? failures[0])}`) : err
    })
    await paced.stop('floor')
    const done = await next()
    await turn
    if (failures.length > 0) throw failures[0]
    if (done.kind !== 'done') throw new Error('latency floor: the receiving device did not finish')
    sender.close()
    await store.close()
    return paced.summary(paced.latencies(done.arrivedAt))
  } finally {
    await worker?.terminate()
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
