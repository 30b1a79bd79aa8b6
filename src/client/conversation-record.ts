/**
 * What a device stores about each conversation besides its two documents, as versioned
 * key-value entries:
 *
 * ```
 * conv:{id}        := uint8 1 • varUint createdAt • varUint8Array admission • varUint nKeys • { varUint epoch • varUint8Array key }
 * sent:{id}:{firstMsgId}/{envelopeKey}
 *                  := uint8 1 • varString envelopeKey • varUint seq (0: not acknowledged) • varString failure ('' if none)
 *                     • uint8 refused (1: refused for good by the relay, its tombstone sent to the others; else 0)
 *                     • varString prefix • varUint n • { varString msgId without prefix }{n}
 *                     the outbox: one row per envelope of ours, naming the messages it carries
 * own:{id}:{msgId} := uint8 1 • varString envelopeKey • varUint seq (0: not acknowledged) • varString failure ('' if none)
 *                     the outbox's format 1 (one row per message): still read, and turned into sent rows at the start that reads it
 * bind:{id}        := uint8 1 • varUint n • { varUint innerClient • varString deviceId }
 * cursor:{id}      := uint8 1 • varUint seq             (stored up to)
 * read:{id}        := uint8 1 • varUint seq             (displayed up to)
 * mseq:{id}:{msgId} := uint8 1 • varUint seq            (row that brought a received message; format 1, read only)
 * mseqs:{id}:{tag} := encodeMessageSeqs                  (the same, one row per received batch)
 * defer:{id}       := uint8 1 • varUint n • { varString envelopeKey • varUint seq }{n}   (held envelopes)
 * verify:{id}      := uint8 1 • varUint n • { varString msgId }{n} • varUint m • { varString msgId }{m}
 *                    messages from a snapshot still to verify (n), and those that failed (m): never shown
 * rcpt:{id}        := uint8 1 • varUint n • { varString device • varUint stored • varUint read • varUint storedAt • varUint readAt }
 * writer:{id}      := encodeWriterIds: the client ids a clean close left to the next session (WriterIds)
 * ```
 */
import * as encoding from 'lib0/encoding'
import { encodeSmall } from '../shared/scratch-encoder.js'
import { type ReceiptEntry, readReceipts, writeReceipts } from '../shared/room-messages.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { putVarUint } from '../shared/lib0-strict.js'
import { StrictReader } from '../shared/wire.js'

export interface ConversationRecord {
  createdAt: number
  admission: Uint8Array
  keys: Map<number, Uint8Array>
}

export interface OwnMessageState {
  envelopeKey: string
  seq: number
  failure: string
  /** Refused for good by the relay, and its tombstone sent to the others: never history (snapshots carry the tombstone). */
  refused?: boolean
  /**
   * Refused as sealed under an epoch that was no longer current: it goes again under the new
   * key. Stored, because the relay holds a blank in its place and sync never sends it again: a
   * device restarted before the re-seal would otherwise keep it pending for good.
   */
  stale?: boolean
}

export const keyOf = {
  conv: (id: string) => `conv:${id}`,
  /** Format 1 of the outbox (one row per message): still read, turned into `sent` rows at the start that reads it, no longer written. */
  own: (id: string, msgId: string) => `own:${id}:${msgId}`,
  ownPrefix: (id: string) => `own:${id}:`,
  /**
   * Format 2: one row per envelope (`encodeSentEnvelope`). Keyed first by the first message it
   * carried when sealed, so rows are appended to the index in send order, not scattered in it.
   */
  sent: (id: string, firstMsgId: string, envelopeKey: string) => `sent:${id}:${firstMsgId}/${envelopeKey}`,
  sentPrefix: (id: string) => `sent:${id}:`,
  bindings: (id: string) => `bind:${id}`,
  cursor: (id: string) => `cursor:${id}`,
  readCursor: (id: string) => `read:${id}`,
  receipts: (id: string) => `rcpt:${id}`,
  /** Format 1 (one row per message): still read, no longer written. */
  messageSeq: (id: string, msgId: string) => `mseq:${id}:${msgId}`,
  messageSeqPrefix: (id: string) => `mseq:${id}:`,
  /** Format 2: one row per received batch (`encodeMessageSeqs`). */
  messageSeqs: (id: string, tag: string) => `mseqs:${id}:${tag}`,
  messageSeqsPrefix: (id: string) => `mseqs:${id}:`,
  recordSeqs: (id: string) => `rseq:${id}`,
  deferred: (id: string) => `defer:${id}`,
  verification: (id: string) => `verify:${id}`,
  /** `stillMissingThrough` (encodeCursor), while it is not 0: a restart still waits for that snapshot. */
  stillMissing: (id: string) => `missing:${id}`,
  /** Our own epoch keys that lost a race or were replaced (encodeLostKeys): only to open what we sealed under them, to seal it again. */
  lostKeys: (id: string) => `lost:${id}`,
  /** The Yjs client ids the last session wrote from, left by a clean close (encodeWriterIds); deleted before anything made from them is sent again. */
  writerIds: (id: string) => `writer:${id}`,
  /** Inner changes still to go again to fill a gap at the other devices (encodeGapFills, gap-fills.ts). */
  gapFills: (id: string) => `fills:${id}`,
}

/** Every entry of one conversation's (besides its two logs): what forgetting it deletes. */
export function conversationEntries(id: string): { keys: string[]; prefixes: string[] } {
  return {
    keys: [
      keyOf.conv(id),
      keyOf.bindings(id),
      keyOf.cursor(id),
      keyOf.readCursor(id),
      keyOf.receipts(id),
      keyOf.recordSeqs(id),
      keyOf.deferred(id),
      keyOf.verification(id),
      keyOf.stillMissing(id),
      keyOf.lostKeys(id),
      keyOf.writerIds(id),
      keyOf.gapFills(id),
    ],
    prefixes: [keyOf.ownPrefix(id), keyOf.sentPrefix(id), keyOf.messageSeqPrefix(id), keyOf.messageSeqsPrefix(id)],
  }
}

export function encodeConversationRecord(r: ConversationRecord): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  encoding.writeVarUint(e, r.createdAt)
  encoding.writeVarUint8Array(e, r.admission)
  encoding.writeVarUint(e, r.keys.size)
  for (const [epoch, key] of r.keys) {
    encoding.writeVarUint(e, epoch)
    encoding.writeVarUint8Array(e, key)
  }
  return encoding.toUint8Array(e)
}

/** Every stored entry starts with its format version; an unknown one is a clear error, not garbage. */
function readVersion(r: StrictReader, what: string): void {
  const v = r.uint8()
  if (v !== 1) throw new PetrelError(ErrorCode.VersionMismatch, `stored ${what} has format version ${v}; this build reads 1`)
}

export function decodeConversationRecord(bytes: Uint8Array): ConversationRecord {
  const r = new StrictReader(bytes)
  readVersion(r, 'conversation')
  const createdAt = r.varUint()
  const admission = r.varBytes(64 * 1024).slice()
  const n = r.varUint(1 << 20)
  const keys = new Map<number, Uint8Array>()
  for (let i = 0; i < n; i++) {
    const epoch = r.varUint()
    const key = r.varBytes(32)
    // Read back corrupt, a short key failed later, deep in the cipher, with an untyped error.
    if (key.length !== 32) throw new PetrelError(ErrorCode.Malformed, `conversation record: the key of epoch ${epoch} has ${key.length} bytes`)
    keys.set(epoch, key.slice())
  }
  return { createdAt, admission, keys }
}

/** The outbox's format 1, one row per message: only tests write it now (to check it is still read). */
export function encodeOwn(s: OwnMessageState): Uint8Array {
  return encodeSmall((e) => {
    encoding.writeUint8(e, 1)
    encoding.writeVarString(e, s.envelopeKey)
    encoding.writeVarUint(e, s.seq)
    encoding.writeVarString(e, s.failure)
  })
}

export function decodeOwn(bytes: Uint8Array): OwnMessageState {
  const r = new StrictReader(bytes)
  readVersion(r, 'own')
  return { envelopeKey: r.varString(64), seq: r.varUint(), failure: r.varString(4096) }
}

/**
 * One envelope of ours and what the outbox knows of it: every message it carries shares its
 * state (acknowledged together, refused together, moved together to a new envelope when sent
 * again). A row per envelope, not per message: format 1's two rows per message (sealed, then
 * ✓) were 160,000 writes in a sender's 8-second round at 10,000 messages a second, and a device
 * that wrote 100,000 messages offline read 100,000 rows to open them (fake-indexeddb: the full
 * open took 3.0–3.3 s with them, 1.5–1.7 s with this; BENCHMARKS.md, seventeenth session). The
 * messages' common prefix (their author's id) is written once.
 */
export interface SentEnvelope extends OwnMessageState {
  msgIds: readonly string[]
}

/**
 * ```
 * uint8       version: 1, or 2 when the outcome is 2 (a build that reads only 1 refuses the row
 *             with a version error instead of misreading it)
 * varString   envelope key
 * varUint     seq (0: not acknowledged)
 * varString   failure ('' : none)
 * uint8       outcome: 0 none, 1 refused for good, 2 refused as stale (to be sealed again; version 2 only)
 * varString   the message ids' common prefix
 * varUint     n, then n × varString: each message id without the prefix
 * ```
 */
export function encodeSentEnvelope(s: SentEnvelope): Uint8Array {
  const ids = s.msgIds
  let prefix = ids[0] ?? ''
  for (let i = 1; i < ids.length && prefix.length > 0; i++) prefix = prefix.slice(0, sharedPrefix(prefix, ids[i]!))
  const outcome = s.refused ? 1 : s.stale ? 2 : 0
  const e = encoding.createEncoder()
  encoding.writeUint8(e, outcome === 2 ? 2 : 1)
  encoding.writeVarString(e, s.envelopeKey)
  encoding.writeVarUint(e, s.seq)
  encoding.writeVarString(e, s.failure)
  encoding.writeUint8(e, outcome)
  encoding.writeVarString(e, prefix)
  encoding.writeVarUint(e, ids.length)
  for (const id of ids) encoding.writeVarString(e, id.slice(prefix.length))
  return encoding.toUint8Array(e)
}

export function decodeSentEnvelope(bytes: Uint8Array): SentEnvelope {
  const r = new StrictReader(bytes)
  const version = r.uint8()
  if (version !== 1 && version !== 2) throw new PetrelError(ErrorCode.VersionMismatch, `stored sent envelope has format version ${version}; this build reads 1 and 2`)
  const envelopeKey = r.varString(64)
  const seq = r.varUint()
  const failure = r.varString(4096)
  const outcome = r.uint8()
  if (outcome > version) throw new PetrelError(ErrorCode.Malformed, `sent envelope: outcome ${outcome} in format ${version}`)
  const prefix = r.varString(256)
  const n = r.varUint(1 << 20)
  const msgIds: string[] = []
  for (let i = 0; i < n; i++) msgIds.push(prefix + r.varString(256))
  return outcome === 2 ? { envelopeKey, seq, failure, refused: false, stale: true, msgIds } : { envelopeKey, seq, failure, refused: outcome === 1, msgIds }
}

/**
 * ```
 * uint8      version 1
 * varUint    n, then n × varUint8Array: a 32-byte key
 * ```
 */
/** `uint8(1) • varUint(n) • n × varUint8Array(item)`: lost keys and gap fills are stored so. */
function encodeByteList(items: Iterable<Uint8Array>): Uint8Array {
  const list = [...items]
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  encoding.writeVarUint(e, list.length)
  for (const item of list) encoding.writeVarUint8Array(e, item)
  return encoding.toUint8Array(e)
}

function decodeByteList(bytes: Uint8Array, what: string, maxItemBytes: number): Uint8Array[] {
  const r = new StrictReader(bytes)
  readVersion(r, what)
  const n = r.varUint(1 << 16)
  const out: Uint8Array[] = []
  for (let i = 0; i < n; i++) out.push(r.varBytes(maxItemBytes).slice())
  r.end()
  return out
}

export const encodeLostKeys = (keys: Iterable<Uint8Array>): Uint8Array => encodeByteList(keys)

export function decodeLostKeys(bytes: Uint8Array): Uint8Array[] {
  const keys = decodeByteList(bytes, 'lost keys', 32)
  for (const k of keys) if (k.length !== 32) throw new PetrelError(ErrorCode.Malformed, `lost keys: a key of ${k.length} bytes`)
  return keys
}

/** Inner updates waiting to go again (gap-fills.ts), as a byte list (encodeByteList). */
export const encodeGapFills = (updates: Iterable<Uint8Array>): Uint8Array => encodeByteList(updates)

export const decodeGapFills = (bytes: Uint8Array): Uint8Array[] => decodeByteList(bytes, 'gap fills', 16 * 1024 * 1024)

export function encodeBindings(b: ReadonlyMap<number, string>): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  encoding.writeVarUint(e, b.size)
  for (const [client, device] of b) {
    encoding.writeVarUint(e, client)
    encoding.writeVarString(e, device)
  }
  return encoding.toUint8Array(e)
}

export function decodeBindings(bytes: Uint8Array): Map<number, string> {
  const r = new StrictReader(bytes)
  readVersion(r, 'bindings')
  const n = r.varUint(1 << 24)
  const out = new Map<number, string>()
  for (let i = 0; i < n; i++) out.set(r.varUint(), r.varString(64))
  return out
}

/**
 * The Yjs client ids one session wrote from, and how far, stored when it closed cleanly: every
 * change made from them was durable by then, and nothing made from them after. The next
 * session may write on from the same ids (writer-ids.ts) instead of new ones: each Yjs
 * transaction costs O(client ids in the document), and a fresh id per session grew that without
 * bound on a device opened many times a day.
 *
 * ```
 * writerIds := uint8 version(1)
 *              • varUint innerClient • varUint innerClock     (the inner document's id; its state then)
 *              • varUint outerClient • varUint outerClock     (the outer document's)
 *              • varUint clientEpoch                          (the epoch the inner id began writing in)
 *              • varUint epoch • varUint devices              (the membership then: its epoch, its device count)
 *              • varUint awarenessClock                       (the outer id's awareness clock at the end)
 * ```
 */
export interface WriterIds {
  innerClient: number
  innerClock: number
  outerClient: number
  outerClock: number
  clientEpoch: number
  epoch: number
  devices: number
  awarenessClock: number
}

export function encodeWriterIds(w: WriterIds): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  for (const n of [w.innerClient, w.innerClock, w.outerClient, w.outerClock, w.clientEpoch, w.epoch, w.devices, w.awarenessClock]) encoding.writeVarUint(e, n)
  return encoding.toUint8Array(e)
}

export function decodeWriterIds(bytes: Uint8Array): WriterIds {
  const r = new StrictReader(bytes)
  readVersion(r, 'writer ids')
  const client = () => r.varUint(0xffff_ffff)
  const w: WriterIds = {
    innerClient: client(),
    innerClock: r.varUint(),
    outerClient: client(),
    outerClock: r.varUint(),
    clientEpoch: r.varUint(),
    epoch: r.varUint(),
    devices: r.varUint(),
    awarenessClock: r.varUint(),
  }
  r.end()
  return w
}

export function encodeCursor(seq: number): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  encoding.writeVarUint(e, seq)
  return encoding.toUint8Array(e)
}

/**
 * Relay positions of the messages one received batch wrote: a row per batch, not per message
 * (10,000 rows of a catch-up were a sixth of its time). Each key is written as what it shares
 * with the key before it and the rest (front coding): a batch's messages mostly come from one
 * author, and their ids share the author's 43-character id, so a row is about a third of
 * format 1's size (a device receiving 10,000 messages a second wrote ~5 MB of these in 8 s).
 *
 * ```
 * messageSeqs := uint8 version(2) • varUint count
 *                • count × (varUint shared • varString rest • varUint seq)
 *                key = previous key's first `shared` UTF-16 code units • rest (the first key's previous is '';
 *                `shared` never splits a surrogate pair)
 * format 1    := uint8 1 • varUint count • count × (varString messageKey • varUint seq)   (still read)
 * ```
 */
export function encodeMessageSeqs(entries: ReadonlyArray<readonly [string, number]>): Uint8Array {
  const shared = new Array<number>(entries.length)
  // Every id we make is ASCII. All the rests go through one native encode and are copied in;
  // this runs once per received batch, unoptimised: a JS loop over each character took ~15 ms
  // of a 10,000-message catch-up (this, ~5 ms); a TextEncoder call per id 3–17 ms.
  let joined = ''
  let previous = ''
  // `previous` up to its first '.', that included ('' if none): message ids are `author.counter`,
  // so a batch's keys mostly share it, and `startsWith` compares its 44 characters natively
  // where the loop in sharedPrefix, unoptimised here, took ~8 ms of a 10,000-message catch-up.
  let author = ''
  for (let i = 0; i < entries.length; i++) {
    const key = entries[i]![0]
    const from = author !== '' && key.startsWith(author) ? author.length : 0
    const n = sharedPrefix(previous, key, from)
    if (from === 0) {
      const dot = key.indexOf('.')
      author = dot < 0 ? '' : key.slice(0, dot + 1)
    }
    shared[i] = n
    joined += n === 0 ? key : key.slice(n)
    previous = key
  }
  const rests = textEncoder.encode(joined)
  if (rests.length !== joined.length) return encodeMessageSeqsAnyText(entries, shared)
  const out = new Uint8Array(1 + 10 + entries.length * 25 + rests.length)
  let p = 0
  out[p++] = 2
  p = putVarUint(out, p, entries.length)
  let k = 0
  for (let i = 0; i < entries.length; i++) {
    // Indexed, not destructured: array destructuring runs the iterator protocol in cold code.
    const entry = entries[i]!
    const n = shared[i]!
    const rest = entry[0].length - n
    p = putVarUint(out, p, n)
    p = putVarUint(out, p, rest)
    out.set(rests.subarray(k, k + rest), p)
    p += rest
    k += rest
    p = putVarUint(out, p, entry[1])
  }
  // A copy of its own: a view would carry the spare capacity into IndexedDB's clone.
  return out.slice(0, p)
}

/**
 * Code units `b` shares with the start of `a`, never ending inside a surrogate pair; the first
 * `from` are known to be shared (and end on a whole character).
 */
function sharedPrefix(a: string, b: string, from = 0): number {
  const max = Math.min(a.length, b.length)
  let n = from
  while (n < max && a.charCodeAt(n) === b.charCodeAt(n)) n++
  if (n > from) {
    const last = b.charCodeAt(n - 1)
    if (last >= 0xd800 && last <= 0xdbff) n--
  }
  return n
}

const textEncoder = new TextEncoder()

function encodeMessageSeqsAnyText(entries: ReadonlyArray<readonly [string, number]>, shared: number[]): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 2)
  encoding.writeVarUint(e, entries.length)
  entries.forEach(([key, seq], i) => {
    encoding.writeVarUint(e, shared[i]!)
    encoding.writeVarString(e, key.slice(shared[i]!))
    encoding.writeVarUint(e, seq)
  })
  return encoding.toUint8Array(e)
}

export function decodeMessageSeqs(bytes: Uint8Array, into: Map<string, number>): void {
  const r = new StrictReader(bytes)
  const version = r.uint8()
  if (version !== 1 && version !== 2) {
    throw new PetrelError(ErrorCode.VersionMismatch, `stored message positions have format version ${version}; this build reads 1 and 2`)
  }
  const count = r.varUint(1 << 24)
  let previous = ''
  for (let i = 0; i < count; i++) {
    let key: string
    if (version === 1) key = r.varString(1024)
    else {
      const n = r.varUint(1024)
      if (n > previous.length) throw new PetrelError(ErrorCode.Malformed, 'stored message positions: a key shares more than the key before it has')
      key = previous.slice(0, n) + r.varString(1024)
    }
    previous = key
    const seq = r.varUint()
    if (!into.has(key)) into.set(key, seq)
  }
  r.end()
}

export function decodeCursor(bytes: Uint8Array): number {
  const r = new StrictReader(bytes)
  readVersion(r, 'cursor')
  return r.varUint()
}

/** Stored like the relay's `receipts` message body (room-messages.ts), behind a version byte. */
export function encodeReceipts(entries: ReceiptEntry[]): Uint8Array {
  const body = writeReceipts(entries).subarray(1)
  const out = new Uint8Array(body.length + 1)
  out[0] = 1
  out.set(body, 1)
  return out
}

export function decodeReceipts(bytes: Uint8Array): ReceiptEntry[] {
  const r = new StrictReader(bytes)
  readVersion(r, 'receipts')
  return readReceipts(r)
}

/**
 * Envelopes held back (`defer:{id}`): format 2 adds whether each came in a row uploaded as a
 * snapshot part, which it must still be when it is opened later. Format 1 (no flag) is read.
 */
export function encodeDeferred(entries: Array<[key: string, seq: number, part?: boolean]>): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 2)
  encoding.writeVarUint(e, entries.length)
  for (const [key, seq, part] of entries) {
    encoding.writeVarString(e, key)
    encoding.writeVarUint(e, seq)
    encoding.writeUint8(e, part ? 1 : 0)
  }
  return encoding.toUint8Array(e)
}

export function decodeDeferred(bytes: Uint8Array): Array<[key: string, seq: number, part: boolean]> {
  const r = new StrictReader(bytes)
  const version = r.uint8()
  if (version !== 1 && version !== 2) throw new PetrelError(ErrorCode.VersionMismatch, `stored deferred has format version ${version}; this build reads 1 and 2`)
  const n = r.varUint(1 << 20)
  const out: Array<[string, number, boolean]> = []
  for (let i = 0; i < n; i++) {
    const key = r.varString(64)
    const seq = r.varUint()
    const part = version === 2 ? r.uint8() : 0
    if (part > 1) throw new PetrelError(ErrorCode.Malformed, 'stored deferred: bad part flag')
    out.push([key, seq, part === 1])
  }
  return out
}

export function encodeVerification(unverified: ReadonlySet<string>, rejected: ReadonlySet<string>): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  for (const set of [unverified, rejected]) {
    encoding.writeVarUint(e, set.size)
    for (const id of set) encoding.writeVarString(e, id)
  }
  return encoding.toUint8Array(e)
}

export function decodeVerification(bytes: Uint8Array, unverified: Set<string>, rejected: Set<string>): void {
  const r = new StrictReader(bytes)
  if (r.uint8() !== 1) throw new PetrelError(ErrorCode.VersionMismatch, 'stored verification state has an unknown format version')
  for (const set of [unverified, rejected]) {
    const n = r.varUint(1 << 24)
    for (let i = 0; i < n; i++) set.add(r.varString(256))
  }
}
