/**
 * The receiving lean device of benchmark 3's floor (latency-floor.ts), on a thread of its own as
 * latency-receiver.ts is. For each row the relay sends: the outer update into its outer
 * document; each new envelope's sender (the one member device that writes) and signature
 * checked, then decrypted; the inner update applied; the new messages' signatures checked; both
 * updates appended to its store; each message's arrival noted (`#i …`, one clock for every
 * thread of the process).
 *
 * ```
 * parent → worker  workerData { url, storage, invite, total, key, senderPub, senderUserPub }
 * worker → parent  { kind: 'ready', tid } | { kind: 'arrived' } | { kind: 'done', arrivedAt } | { kind: 'failed', message }
 * ```
 */
import { parentPort, workerData } from 'node:worker_threads'
import * as Y from 'yjs'
import { INNER_MESSAGE_BATCHES, INNER_MESSAGES } from '../src/client/inner-guard.js'
import { decodeInviteToken } from '../src/client/invite-token.js'
import { verifyMessages } from '../src/client/message-signature.js'
import { openSqliteStore } from '../src/client/storage/sqlite-store.js'
import { toBase64Url, verify, verifyWithNodeSync } from '../src/shared/crypto/index.js'
import { decryptEnvelope, readEnvelope, signedEnvelopeBytes } from '../src/shared/envelope.js'
import { OUTER_LOG } from '../src/shared/outer-keys.js'
import { readRows, RoomMessage } from '../src/shared/room-messages.js'
import { StrictReader } from '../src/shared/wire.js'
import { until, wallNow } from './common.js'
import { PetrelDevice } from './petrel-device.js'
import { ownThreadId } from './thread-times.js'

export interface FloorReceiverData {
  url: string
  storage: string
  invite: string
  total: number
  key: Uint8Array
  senderPub: Uint8Array
  senderUserPub: Uint8Array
}

async function receive({ url, storage, invite, total, key, senderPub, senderUserPub }: FloorReceiverData): Promise<void> {
  const store = await openSqliteStore(storage)
  const outer = new Y.Doc()
  const inner = new Y.Doc()
  const log = outer.getMap<Uint8Array>(OUTER_LOG)
  const messages = inner.getMap<{ t: string }>(INNER_MESSAGES)
  const batches = inner.getMap(INNER_MESSAGE_BATCHES)
  const senderDevice = toBase64Url(senderPub)
  const senderUser = toBase64Url(senderUserPub)
  const arrivedAt = new Float64Array(total)
  let arrived = 0
  let rowsSeen = 0
  let lastSeq = 0
  const failures: unknown[] = []
  let newEnvelopes: string[] = []
  log.observe((e) => {
    for (const k of e.keysChanged) newEnvelopes.push(k)
  })
  let newMessages: string[] = []
  messages.observe((e) => {
    for (const k of e.keysChanged) newMessages.push(k)
  })

  const onRows = async (message: Uint8Array, room: string): Promise<void> => {
    const r = new StrictReader(message)
    r.pos = 1
    const { update, index } = readRows(r)
    rowsSeen++
    for (const row of index) lastSeq = Math.max(lastSeq, row.seq)
    newEnvelopes = []
    Y.applyUpdate(outer, update, 'remote')
    const appended: Array<{ convId: string; doc: 'inner' | 'outer'; bytes: Uint8Array }> = [{ convId: room, doc: 'outer', bytes: update }]
    newMessages = []
    for (const k of newEnvelopes) {
      const h = readEnvelope(log.get(k)!)
      // The room's maker wrote a few before it left (under keys this device does not hold).
      if (toBase64Url(h.senderDevicePub) !== senderDevice) continue
      const signed = signedEnvelopeBytes(room, h)
      const ok = verifyWithNodeSync(h.senderDevicePub, signed, h.signature) ?? (await verify(h.senderDevicePub, signed, h.signature))
      if (!ok) throw new Error('an envelope with a bad signature')
      const innerUpdate = decryptEnvelope(room, h, key)
      Y.applyUpdate(inner, innerUpdate, 'remote')
      appended.push({ convId: room, doc: 'inner', bytes: innerUpdate })
    }
    const items = newMessages.map((id) => ({ id, value: messages.get(id) }))
    const verdicts = await verifyMessages(room, items, (d) => (d === senderDevice ? senderUser : undefined), (k) => batches.get(k))
    const now = wallNow()
    items.forEach(({ value }, j) => {
      if (!verdicts[j]) throw new Error('a message with a bad signature')
      const text = value!.t
      const i = Number.parseInt(text.slice(1, text.indexOf(' ')), 10)
      if (arrivedAt[i] === 0) {
        arrivedAt[i] = now
        arrived++
      }
    })
    // As the client stores received rows: in a commit that may wait for company (`soon`).
    store.commit({ append: appended }, { soon: true }).catch((err: unknown) => failures.push(err))
  }

  const device = await PetrelDevice.connect(url)
  let turn: Promise<void> = Promise.resolve()
  const room = decodeInviteToken(invite).room
  await device.join(invite, {
    onMessage: (message) => {
      if (message[0] !== RoomMessage.Rows) return
      // In order: a row's envelopes may wait for the thread pool's verifier.
      turn = turn.then(() => onRows(message, room)).catch((err: unknown) => void failures.push(err))
    },
  })
  parentPort!.postMessage({ kind: 'ready', tid: ownThreadId() })
  await until(() => arrived === total || failures.length > 0, 60_000, `${total} messages at the lean receiver`, 'latency floor').catch((err: unknown) => {
    const missing: number[] = []
    for (let i = 0; i < total && missing.length < 10; i++) if (arrivedAt[i] === 0) missing.push(i)
    // What the outer document still waits for says whether a row never came or came unusable.
    const waiting = outer.store.pendingStructs ? [...outer.store.pendingStructs.missing].map(([client, clock]) => `${client}@${clock}`).join(' ') : 'nothing'
    throw new Error(`${String(err)} (${arrived} arrived, ${rowsSeen} row messages, the last seq ${lastSeq}; the first missing: ${missing.join(', ')}; the outer document waits for ${waiting})`)
  })
  if (failures.length > 0) throw failures[0]
  parentPort!.postMessage({ kind: 'arrived' })
  device.close()
  await store.close()
  parentPort!.postMessage({ kind: 'done', arrivedAt })
}

if (parentPort && workerData) {
  receive(workerData as FloorReceiverData).catch((err: unknown) => parentPort!.postMessage({ kind: 'failed', message: String((err as Error)?.stack ?? err) }))
}
