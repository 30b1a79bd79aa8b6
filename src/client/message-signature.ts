/**
 * Each message carries its author device's signature inside the inner document, so a
 * snapshot (one member's copy of everyone's messages) cannot put words in another member's
 * mouth for a device that reads history from it. Messages that arrive in envelopes are
 * already authenticated by the envelope signature and the authorship rules; these signatures
 * are checked for messages that came from a snapshot, before they are shown.
 *
 * ```
 * signed := varString room • varString messageId • varString text • varUint sentAt • varUint hlc
 *           • varUint counter • varString deviceId        domain 'message', by that device
 * ```
 * Everything a reader sees or orders by is covered: the text, the times, and the position.
 *
 * Sends made together (an outbox draining, a burst) share one signature instead: an Ed25519
 * signature was two thirds of what `send()` cost a device. The batch's entry, written in the
 * same transaction as its messages under the root map `messageBatches`, holds the SHA-256 of
 * each message's `signed` bytes above, in send order; each message names the entry (`b`) and
 * its place in it (`i`):
 *
 * ```
 * entry      := { s: signature(64), d: deviceId, h: k × sha256(signed_i) }   key: userId • "." • b
 * batchBytes := varString room • varString entryKey • varString deviceId • varUint8Array(h)
 *               domain 'message-batch', by device d
 * message    := { t, at, h, n, d, b: base64url(9 random bytes), i: index }
 * ```
 * A message names its entry by the part after its author's userId and '.' only: the full
 * key would repeat 44 characters per message that the message id already carries.
 * A reader checks one signature per batch and one hash per message, so a snapshot of 10,000
 * messages sent in bursts costs a fresh device tens of signature checks, not 10,000.
 */
import * as encoding from 'lib0/encoding'
import { fromBase64Url, SignatureDomain, sha256Into, signedBytes, signWithDomain, type VerifyItem, verifyBatch } from '../shared/crypto/index.js'
import { viewSmall } from '../shared/scratch-encoder.js'
import { writeVarString } from '../shared/var-string.js'

export interface SignableMessage {
  t: string
  at: number
  h: number
  n: number
  d: string
}

/** One batch signature's entry in the inner document's `messageBatches` map. */
export interface MessageBatchEntry {
  /** Ed25519 signature by device `d` over `batchBytes` (domain 'message-batch'). */
  s: Uint8Array
  d: string
  /** The SHA-256 of each message's signed bytes, 32 bytes each, in send order. */
  h: Uint8Array
}

const HASH_BYTES = 32

function writePayload(e: encoding.Encoder, room: string, id: string, m: SignableMessage): void {
  // var-string.ts's writer, lib0's bytes: every send hashes this (BENCHMARKS.md, twenty-sixth session).
  writeVarString(e, room)
  writeVarString(e, id)
  writeVarString(e, m.t)
  encoding.writeVarUint(e, m.at)
  encoding.writeVarUint(e, m.h)
  encoding.writeVarUint(e, m.n)
  writeVarString(e, m.d)
}

function payload(room: string, id: string, m: SignableMessage): Uint8Array {
  const e = encoding.createEncoder()
  writePayload(e, room, id, m)
  return encoding.toUint8Array(e)
}

/** SHA-256 of a message's signed bytes into `out` at `at`, without an array for the bytes or the digest. */
function hashPayloadInto(room: string, id: string, m: SignableMessage, out: Uint8Array, at: number): void {
  viewSmall(
    (e) => writePayload(e, room, id, m),
    (bytes) => sha256Into(bytes, out, at),
  )
}

function batchPayload(room: string, entryKey: string, deviceId: string, hashes: Uint8Array): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, room)
  encoding.writeVarString(e, entryKey)
  encoding.writeVarString(e, deviceId)
  encoding.writeVarUint8Array(e, hashes)
  return encoding.toUint8Array(e)
}

export function signMessage(room: string, id: string, m: SignableMessage, deviceSecret: Uint8Array): Promise<Uint8Array> {
  return signWithDomain(SignatureDomain.Message, deviceSecret, payload(room, id, m))
}

/**
 * One signature for several messages of device `m.d` (all the same device): the entry to store
 * under `entryKey` = the author's userId • '.' • a nonce; each message stores the nonce as `b`.
 *
 * @example
 * ```ts
 * const entry = await signMessageBatch(room, `${userId}.${nonce}`, [{ id, m }, { id: id2, m: m2 }], deviceSecret)
 * doc.transact(() => { batches.set(`${userId}.${nonce}`, entry); messages.set(id, { ...m, b: nonce, i: 0 }); … })
 * ```
 */
export async function signMessageBatch(
  room: string,
  entryKey: string,
  items: ReadonlyArray<{ id: string; m: SignableMessage }>,
  deviceSecret: Uint8Array,
): Promise<MessageBatchEntry> {
  const deviceId = items[0]!.m.d
  const h = new Uint8Array(items.length * HASH_BYTES)
  items.forEach(({ id, m }, i) => {
    if (m.d !== deviceId) throw new TypeError('a message batch is signed by one device')
    hashPayloadInto(room, id, m, h, i * HASH_BYTES)
  })
  const s = await signWithDomain(SignatureDomain.MessageBatch, deviceSecret, batchPayload(room, entryKey, deviceId, h))
  return { s, d: deviceId, h }
}

type Check = { kind: 'single'; item: VerifyItem } | { kind: 'batch'; entryKey: string } | undefined

/**
 * Which of these messages carry a valid signature by a device of their author (the userId
 * the id starts with), alone (`s`) or through their batch's entry (`b`, `i`; `batchEntry`
 * reads the `messageBatches` map). `deviceOwner` maps a device id to its person, for every
 * device ever admitted to the conversation.
 */
export async function verifyMessages(
  room: string,
  items: ReadonlyArray<{ id: string; value: unknown }>,
  deviceOwner: (deviceId: string) => string | undefined,
  batchEntry: (entryKey: string) => unknown = () => undefined,
): Promise<boolean[]> {
  // A batch's signature is checked once, however many of its messages are on the page.
  const batches = new Map<string, VerifyItem>()
  const digest = new Uint8Array(HASH_BYTES)
  const checks: Check[] = items.map(({ id, value }) => {
    const m = value as Partial<SignableMessage> & { s?: unknown; b?: unknown; i?: unknown }
    if (!m || typeof m.t !== 'string' || typeof m.d !== 'string') return undefined
    if (![m.at, m.h, m.n].every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) return undefined
    const author = id.slice(0, id.indexOf('.'))
    if (deviceOwner(m.d) !== author) return undefined
    let publicKey: Uint8Array
    try {
      publicKey = fromBase64Url(m.d)
    } catch {
      return undefined
    }
    if (publicKey.length !== 32) return undefined
    if (m.s instanceof Uint8Array && m.s.length === 64) {
      return { kind: 'single', item: { publicKey, message: signedBytes(SignatureDomain.Message, payload(room, id, m as SignableMessage)), signature: m.s } }
    }
    const { b: nonce, i: index } = m
    if (typeof nonce !== 'string' || !Number.isSafeInteger(index) || (index as number) < 0) return undefined
    const entryKey = `${author}.${nonce}`
    const entry = batchEntry(entryKey) as Partial<MessageBatchEntry> | undefined
    if (!entry || entry.d !== m.d || !(entry.s instanceof Uint8Array) || entry.s.length !== 64) return undefined
    if (!(entry.h instanceof Uint8Array) || entry.h.length % HASH_BYTES !== 0) return undefined
    const at = (index as number) * HASH_BYTES
    if (at + HASH_BYTES > entry.h.length) return undefined
    hashPayloadInto(room, id, m as SignableMessage, digest, 0)
    if (!sameBytes(digest, entry.h, at)) return undefined
    if (!batches.has(entryKey)) {
      batches.set(entryKey, { publicKey, message: signedBytes(SignatureDomain.MessageBatch, batchPayload(room, entryKey, m.d, entry.h)), signature: entry.s })
    }
    return { kind: 'batch', entryKey }
  })
  const present: VerifyItem[] = []
  for (const c of checks) if (c?.kind === 'single') present.push(c.item)
  const batchKeys = [...batches.keys()]
  present.push(...batches.values())
  const verdicts = await verifyBatch(present, { handOverMessages: true })
  const batchOk = new Map<string, boolean>()
  const first = present.length - batchKeys.length
  for (let j = 0; j < batchKeys.length; j++) batchOk.set(batchKeys[j]!, verdicts[first + j]!)
  let i = 0
  return checks.map((c) => (c === undefined ? false : c.kind === 'single' ? verdicts[i++]! : batchOk.get(c.entryKey)!))
}

/** Whether `a` equals `b[at .. at + a.length]` (public data: no need for constant time). */
function sameBytes(a: Uint8Array, b: Uint8Array, at: number): boolean {
  for (let k = 0; k < a.length; k++) if (a[k] !== b[at + k]) return false
  return true
}
