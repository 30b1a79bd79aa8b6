/**
 * Strict, bounded parser (and splitter) for the Yjs V1 update format, as written by yjs 13.6.x.
 *
 * Why this exists: the relay must inspect and re-frame updates without ever running Yjs's decoder
 * on network bytes (crafted updates hang or balloon it, yjs issue 687), and clients must split
 * updates that exceed the frame size. Reference: the team notes shared/notes/yjs-v1-format.md.
 *
 * Grammar (lib0 primitives as in lib0-strict.ts; `•` = concatenation):
 *
 *   update      = structs • deleteSet                       ; nothing may follow
 *   structs     = varUint(nGroups) • group{nGroups}         ; clients strictly descending
 *   group       = varUint(nStructs ≥ 1) • varUint(client) • varUint(startClock) • struct{nStructs}
 *   struct      = 0x00 • varUint(len)                       ; GC   (info byte exactly 0x00)
 *               | 0x0a • varUint(len)                       ; Skip (info byte exactly 0x0a)
 *               | info • item                               ; info & 0x1f in 1..9
 *   item        = [id            if info & 0x80]            ; origin
 *                 [id            if info & 0x40]            ; rightOrigin
 *                 [parent • [varString(key) if info & 0x20] if info & 0xc0 == 0]
 *                 content(info & 0x1f)
 *   parent      = varUint(1) • varString(rootName) | varUint(0) • id
 *   id          = varUint(client) • varUint(clock)
 *   content(1)  = varUint(len)                              ; Deleted,  len clocks
 *   content(2)  = varUint(n) • varString(json | "undefined"){n} ; JSON (legacy), n clocks
 *   content(3)  = varUint8Array                             ; Binary,   1 clock
 *   content(4)  = varString                                 ; String,   UTF-16 length clocks
 *   content(5)  = varString(json)                           ; Embed,    1 clock
 *   content(6)  = varString(key) • varString(json)          ; Format,   1 clock
 *   content(7)  = varUint(typeRef 0..6) • [varString(name) if typeRef ∈ {3,5}] ; Type, 1 clock
 *   content(8)  = varUint(n) • Any{n}                       ; Any,      n clocks
 *   content(9)  = varString(guid) • Any(object)             ; Doc,      1 clock
 *   deleteSet   = varUint(nClients) • (varUint(client) • varUint(nRanges ≥ 1) •
 *                 (varUint(clock) • varUint(len ≥ 1)){nRanges}){nClients}
 *                 ; clients strictly descending; per client ranges sorted, non-overlapping
 *
 * Struct clocks are implicit: a group's first struct starts at startClock and each struct starts
 * where the previous one ended. Every struct end and every delete range end must be
 * ≤ limits.maxClockLen.
 *
 * Why stricter than Yjs: Yjs reads several encodings it never writes, and some change meaning
 * silently: a repeated client drops the earlier group; `GC len 2^40` in 12 bytes moves a state
 * vector so that client's real edits are ignored; `0x8a` is a Skip to applyUpdate but an error
 * to mergeUpdates; trailing bytes are ignored. Others make every client throw while reading
 * (bad UTF-8, bad JSON text, non-object subdoc options, unknown typeRef). Rejecting all of these
 * gives the relay exactly one reading of an accepted update, the one every Yjs client applies.
 * Counts are checked against the bytes left before any loop runs, and nothing is allocated in
 * proportion to a claimed count, so time and memory stay linear in the input length.
 *
 * Errors: PetrelError(TooLarge) when a configured size/count limit (maxBytes, maxStructs,
 * maxDeleteRanges) is exceeded by otherwise readable input; PetrelError(Malformed) for everything
 * else; PetrelError(InvalidArgument) for bad arguments from our own code (not network bytes).
 */
import { ErrorCode, PetrelError } from './errors.js'
import { ByteWriter, checkJson, malformed, StrictDecoder, varUintLength } from './lib0-strict.js'

export interface UpdateLimits {
  /** Whole update, in bytes. */
  maxBytes: number
  /** Structs over all groups. */
  maxStructs: number
  /** Upper bound for clock + len of any struct or delete range (clamped to 2^53−1). */
  maxClockLen: number
  /** Map key (parentSub); also format keys, XML node/hook names and subdoc guids. */
  maxKeyBytes: number
  /** Root type name (`doc.get(name)`). */
  maxRootNameBytes: number
  /** Delete ranges over all clients. */
  maxDeleteRanges: number
  /** Nesting depth of Any values and JSON texts (default 32). */
  maxNesting?: number
}

export const defaultUpdateLimits: UpdateLimits = Object.freeze({
  maxBytes: 1024 * 1024,
  maxStructs: 100_000,
  maxClockLen: 2 ** 32,
  maxKeyBytes: 256,
  maxRootNameBytes: 64,
  maxDeleteRanges: 100_000,
  maxNesting: 32,
})

export interface ParsedId {
  client: number
  clock: number
}

export interface ParsedStruct {
  kind: 'gc' | 'skip' | 'item'
  /** Byte offsets of the whole struct (info byte through content end) within the input. */
  start: number
  end: number
  /** The struct covers clocks [clock, clock + len). */
  clock: number
  len: number
  info: number
  /** info & 0x1f: 0 GC, 10 Skip, 1..9 item content. */
  contentRef: number
  origin?: ParsedId
  rightOrigin?: ParsedId
  /** Root type name, when the wire says parentInfo = 1. */
  parentRoot?: string
  /** Parent item, when the wire says parentInfo = 0. */
  parentId?: ParsedId
  /**
   * parentSub (map key) when present on the wire. An item with an origin or rightOrigin carries
   * no key even if info & 0x20 is set: Yjs inherits it from the origin item.
   */
  key?: string
  /**
   * Byte offsets of the content as written, after origin/parent/key: e.g. for ContentBinary the
   * varUint8Array including its length prefix; for GC, Skip and ContentDeleted the len varUint.
   */
  contentStart: number
  contentEnd: number
  /** ContentBinary (ref 3) payload: a view into the input, not a copy. */
  binary?: Uint8Array
}

export interface ParsedGroup {
  client: number
  startClock: number
  structs: ParsedStruct[]
  /** Byte offset of the group's nStructs varUint. */
  headerStart: number
}

export interface ParsedDeleteSet {
  client: number
  ranges: Array<[clock: number, len: number]>
}

export interface ParsedUpdate {
  groups: ParsedGroup[]
  deleteSet: ParsedDeleteSet[]
  byteLength: number
  /** Byte offset where the delete set begins (it runs to the end of the input). */
  deleteSetStart: number
}

/** A run of consecutive, already-encoded structs of one client. */
export interface StructRun {
  client: number
  /** Clock of the first struct in `bytes`. */
  startClock: number
  /** Number of structs in `bytes`. */
  count: number
  /** The structs exactly as on the wire, info byte of the first through end of the last. */
  bytes: Uint8Array
}

// Smallest possible encodings, used to cap counts by the bytes actually left.
const MIN_STRUCT_BYTES = 2 // info + 1-byte len
const MIN_GROUP_BYTES = 3 + MIN_STRUCT_BYTES // nStructs, client, startClock, one struct
const MIN_RANGE_BYTES = 2
const MIN_DS_CLIENT_BYTES = 2 + MIN_RANGE_BYTES

const INFO_ORIGIN = 0x80
const INFO_RIGHT_ORIGIN = 0x40
const INFO_PARENT_SUB = 0x20
const REF_GC = 0
const REF_SKIP = 10

const MAX_NESTING_CAP = 1000

type Limits = Required<UpdateLimits>

const invalidArgument = (message: string): never => {
  throw new PetrelError(ErrorCode.InvalidArgument, message)
}

const tooLarge = (message: string): never => {
  throw new PetrelError(ErrorCode.TooLarge, message)
}

const isCount = (n: unknown): n is number => typeof n === 'number' && (Number.isSafeInteger(n) || n === Infinity) && n >= 0

/** The defaults, resolved (maxNesting present, maxClockLen clamped). */
const defaultLimits: Limits = Object.freeze({
  ...defaultUpdateLimits,
  maxNesting: defaultUpdateLimits.maxNesting ?? 32,
  maxClockLen: Math.min(defaultUpdateLimits.maxClockLen, Number.MAX_SAFE_INTEGER),
})

function resolveLimits(partial: Partial<UpdateLimits> | undefined): Limits {
  // The usual call passes only `maxBytes` (every parse on the relay and the clients): the
  // defaults with that one field, without the general walk (0.45 µs a message on the relay).
  if (partial === undefined) return defaultLimits
  let onlyMaxBytes = true
  for (const k in partial) if (k !== 'maxBytes') onlyMaxBytes = false
  if (onlyMaxBytes) {
    const max = partial.maxBytes
    if (max === undefined) return defaultLimits
    if (!isCount(max)) invalidArgument('limit maxBytes must be a non-negative integer or Infinity')
    return { ...defaultLimits, maxBytes: max }
  }
  const l: Record<string, number> = { ...defaultUpdateLimits }
  for (const [k, v] of Object.entries(partial ?? {})) {
    // An explicit `undefined` (common when spreading options) means "use the default".
    if (v === undefined) continue
    if (!isCount(v)) invalidArgument(`limit ${k} must be a non-negative integer or Infinity`)
    l[k] = v
  }
  const lim = l as unknown as Limits
  // Clocks are JS numbers: beyond 2^53−1 clock arithmetic would silently round.
  lim.maxClockLen = Math.min(lim.maxClockLen, Number.MAX_SAFE_INTEGER)
  // Any values are validated recursively; keep well clear of the call-stack limit.
  if (lim.maxNesting > MAX_NESTING_CAP) invalidArgument(`limit maxNesting must be at most ${MAX_NESTING_CAP}`)
  return lim
}

/**
 * Parses a Yjs V1 update without running Yjs, in time and memory linear in `bytes.length`.
 *
 * @example const { groups, deleteSet } = parseUpdate(frame.payload)
 * @throws PetrelError(Malformed | TooLarge); InvalidArgument for a non-Uint8Array or bad limits.
 */
export function parseUpdate(bytes: Uint8Array, limits?: Partial<UpdateLimits>): ParsedUpdate {
  if (!(bytes instanceof Uint8Array)) invalidArgument('update must be a Uint8Array')
  const lim = resolveLimits(limits)
  if (bytes.length > lim.maxBytes) tooLarge(`update of ${bytes.length} bytes exceeds ${lim.maxBytes}`)
  const d = new StrictDecoder(bytes)
  // reserve 1: the delete set (at least `00`) must still follow all groups.
  const nGroups = d.readCount(MIN_GROUP_BYTES, 'struct groups', 1)
  const groups: ParsedGroup[] = []
  let structCount = 0
  let prevClient = Number.POSITIVE_INFINITY
  for (let g = 0; g < nGroups; g++) {
    const headerStart = d.pos
    const nStructs = d.readCount(MIN_STRUCT_BYTES, 'structs', 1)
    // Yjs never writes an empty group; accepting one would allow a second reading of the same update.
    if (nStructs === 0) malformed(`struct group at byte ${headerStart} is empty`)
    structCount += nStructs
    if (structCount > lim.maxStructs) tooLarge(`update has more than ${lim.maxStructs} structs`)
    const client = d.readVarUint()
    prevClient = checkDescending(client, prevClient, 'struct group', headerStart)
    const startClock = d.readVarUint()
    const structs: ParsedStruct[] = []
    let clock = startClock
    for (let i = 0; i < nStructs; i++) {
      const s = readStruct(d, clock, lim)
      structs.push(s)
      clock += s.len
    }
    groups.push({ client, startClock, structs, headerStart })
  }
  const deleteSetStart = d.pos
  const deleteSet = readDeleteSet(d, lim)
  // Yjs ignores trailing bytes; a relay that forwards them would forward a second, hidden payload.
  if (d.remaining !== 0) malformed(`${d.remaining} trailing bytes after the delete set`)
  return { groups, deleteSet, byteLength: bytes.length, deleteSetStart }
}

/**
 * Yjs writes clients in descending order; with strictly descending order a repeated client, which
 * applyUpdate would silently resolve by dropping the earlier group, cannot occur either.
 */
function checkDescending(client: number, prev: number, what: string, at: number): number {
  if (client === prev) malformed(`${what} at byte ${at}: client ${client} appears twice`)
  if (client > prev) malformed(`${what} at byte ${at}: client ${client} is not in descending order`)
  return client
}

function checkClockRange(clock: number, len: number, lim: Limits, at: number, what: string): void {
  // A tiny update can claim a huge range and move a state vector past a client's real edits.
  if (len === 0) malformed(`${what} at byte ${at} has length 0`)
  if (clock + len > lim.maxClockLen) malformed(`${what} at byte ${at} ends past clock ${lim.maxClockLen}`)
}

function readId(d: StrictDecoder, lim: Limits): ParsedId {
  const at = d.pos
  const client = d.readVarUint()
  const clock = d.readVarUint()
  // An ID names an existing struct, so it must lie inside the allowed clock space.
  if (clock >= lim.maxClockLen) malformed(`ID at byte ${at} has clock ${clock} beyond the clock limit`)
  return { client, clock }
}

/**
 * Every struct has every field, set in one order: one hidden class for all of them, with its
 * fields inside the object. Fields added only when present made a chain of shapes and spilled
 * into a separate property array (a second allocation per struct, on every update parsed).
 */
function struct(
  kind: ParsedStruct['kind'],
  start: number,
  end: number,
  clock: number,
  len: number,
  info: number,
  contentRef: number,
  contentStart: number,
  contentEnd: number,
): ParsedStruct {
  return {
    kind,
    start,
    end,
    clock,
    len,
    info,
    contentRef,
    origin: undefined,
    rightOrigin: undefined,
    parentRoot: undefined,
    parentId: undefined,
    key: undefined,
    contentStart,
    contentEnd,
    binary: undefined,
  }
}

/** The last root name read: an update's items nearly all sit under one or two roots. */
const rootNames = { bytes: new Uint8Array(0), value: '' }

function readStruct(d: StrictDecoder, clock: number, lim: Limits): ParsedStruct {
  const start = d.pos
  const info = d.readUint8()
  const ref = info & 0x1f
  if (ref === REF_GC || ref === REF_SKIP) {
    // applyUpdate masks the info byte (0x80 reads as GC) but mergeUpdates/decodeUpdate do not
    // (0x8a throws there): only the exact bytes read the same everywhere.
    if (info !== ref) malformed(`${ref === REF_GC ? 'GC' : 'Skip'} struct at byte ${start} has info 0x${info.toString(16)}`)
    const contentStart = d.pos
    const len = d.readVarUint()
    checkClockRange(clock, len, lim, start, 'struct')
    const kind = ref === REF_GC ? 'gc' : 'skip'
    return struct(kind, start, d.pos, clock, len, info, ref, contentStart, d.pos)
  }
  if (ref > 9) malformed(`struct at byte ${start} has unknown content ref ${ref}`)
  const s = struct('item', start, 0, clock, 0, info, ref, 0, 0)
  if (info & INFO_ORIGIN) s.origin = readId(d, lim)
  if (info & INFO_RIGHT_ORIGIN) s.rightOrigin = readId(d, lim)
  // With an origin, parent and key are inherited and NOT on the wire, even when 0x20 is set.
  if ((info & (INFO_ORIGIN | INFO_RIGHT_ORIGIN)) === 0) {
    const at = d.pos
    const parentInfo = d.readVarUint()
    // Yjs reads anything ≠ 1 as "parent ID follows"; only 0 is ever written.
    if (parentInfo === 1) s.parentRoot = d.readRepeatedString(lim.maxRootNameBytes, 'root type name', rootNames)
    else if (parentInfo === 0) s.parentId = readId(d, lim)
    else malformed(`parentInfo ${parentInfo} at byte ${at} (must be 0 or 1)`)
    if (info & INFO_PARENT_SUB) s.key = d.readVarString(lim.maxKeyBytes, 'map key')
  }
  s.contentStart = d.pos
  s.len = readContent(d, ref, lim, s)
  s.contentEnd = d.pos
  s.end = d.pos
  checkClockRange(clock, s.len, lim, start, 'struct')
  return s
}

/** Validates one item content and returns its clock length. */
function readContent(d: StrictDecoder, ref: number, lim: Limits, s: ParsedStruct): number {
  const depth = lim.maxNesting
  switch (ref) {
    case 1: // Deleted
      return d.readVarUint()
    case 2: {
      // JSON (legacy). Yjs JSON.parses each entry while reading, so bad text fails the whole update on clients.
      const n = d.readCount(1, 'ContentJSON entries')
      for (let i = 0; i < n; i++) {
        const text = d.readVarString(Number.MAX_SAFE_INTEGER, 'ContentJSON entry')
        if (text !== 'undefined') checkJson(text, depth, 'ContentJSON entry')
      }
      return n
    }
    case 3:
      s.binary = d.readVarUint8Array()
      return 1
    case 4:
      // Yjs counts clocks in UTF-16 code units: "a😀" is 5 bytes but 3 clocks.
      return d.skipVarString(Number.MAX_SAFE_INTEGER, 'ContentString')
    case 5:
      checkJson(d.readVarString(Number.MAX_SAFE_INTEGER, 'ContentEmbed'), depth, 'ContentEmbed')
      return 1
    case 6:
      d.skipVarString(lim.maxKeyBytes, 'ContentFormat key')
      checkJson(d.readVarString(Number.MAX_SAFE_INTEGER, 'ContentFormat value'), depth, 'ContentFormat value')
      return 1
    case 7: {
      const at = d.pos
      const typeRef = d.readVarUint()
      // 0 YArray, 1 YMap, 2 YText, 3 YXmlElement(+nodeName), 4 YXmlFragment, 5 YXmlHook(+hookName), 6 YXmlText
      if (typeRef > 6) malformed(`ContentType at byte ${at} has unknown typeRef ${typeRef}`)
      if (typeRef === 3 || typeRef === 5) d.skipVarString(lim.maxKeyBytes, 'XML node or hook name')
      return 1
    }
    case 8: {
      const n = d.readCount(1, 'ContentAny values')
      for (let i = 0; i < n; i++) d.skipAny(depth)
      return n
    }
    default: {
      // 9, Doc. Yjs reads `opts.shouldLoad` from the Any, so anything but an object throws on clients.
      d.skipVarString(lim.maxKeyBytes, 'subdocument guid')
      if (d.peekUint8() !== 0x76) malformed(`ContentDoc options at byte ${d.pos} are not an object`)
      d.skipAny(depth)
      return 1
    }
  }
}

function readDeleteSet(d: StrictDecoder, lim: Limits): ParsedDeleteSet[] {
  const nClients = d.readCount(MIN_DS_CLIENT_BYTES, 'delete set clients')
  const out: ParsedDeleteSet[] = []
  let total = 0
  let prevClient = Number.POSITIVE_INFINITY
  for (let c = 0; c < nClients; c++) {
    const at = d.pos
    const client = d.readVarUint()
    prevClient = checkDescending(client, prevClient, 'delete set entry', at)
    const nRanges = d.readCount(MIN_RANGE_BYTES, 'delete ranges')
    // Yjs drops such entries on read and never writes them.
    if (nRanges === 0) malformed(`delete set entry at byte ${at} has no ranges`)
    total += nRanges
    if (total > lim.maxDeleteRanges) tooLarge(`delete set has more than ${lim.maxDeleteRanges} ranges`)
    const ranges: Array<[number, number]> = []
    let prevEnd = 0
    for (let r = 0; r < nRanges; r++) {
      const rat = d.pos
      const clock = d.readVarUint()
      const len = d.readVarUint()
      checkClockRange(clock, len, lim, rat, 'delete range')
      // Yjs's encoder sorts and merges; unsorted or overlapping ranges only come from hand-made bytes.
      if (clock < prevEnd) malformed(`delete range at byte ${rat} is unsorted or overlaps the previous one`)
      ranges.push([clock, len])
      prevEnd = clock + len
    }
    out.push({ client, ranges })
  }
  return out
}

/** True when the update carries neither structs nor deletions (e.g. `00 00`). */
export function isEmptyUpdate(p: ParsedUpdate): boolean {
  return p.groups.length === 0 && p.deleteSet.length === 0
}

/**
 * Parses a state vector (`varUint n • (varUint client • varUint clock){n}`), strictly: canonical
 * varUints, no trailing bytes, no repeated client (lib0 would keep the last one silently).
 * Client order is not checked, since hand-written encoders do not all sort.
 *
 * @throws PetrelError(Malformed); PetrelError(TooLarge) beyond `maxEntries`.
 */
export function parseStateVector(bytes: Uint8Array, maxEntries = 100_000): Map<number, number> {
  if (!(bytes instanceof Uint8Array)) invalidArgument('state vector must be a Uint8Array')
  const d = new StrictDecoder(bytes)
  const n = d.readCount(2, 'state vector entries')
  if (n > maxEntries) tooLarge(`state vector has ${n} entries, limit ${maxEntries}`)
  const sv = new Map<number, number>()
  for (let i = 0; i < n; i++) {
    const at = d.pos
    const client = d.readVarUint()
    const clock = d.readVarUint()
    if (sv.has(client)) malformed(`state vector entry at byte ${at}: client ${client} appears twice`)
    sv.set(client, clock)
  }
  if (d.remaining !== 0) malformed(`${d.remaining} trailing bytes after the state vector`)
  return sv
}

/** Encodes a state vector exactly as Yjs does (descending client order). */
export function encodeStateVector(sv: Map<number, number>): Uint8Array {
  const entries = [...sv.entries()]
  for (const [client, clock] of entries) {
    if (!Number.isSafeInteger(client) || client < 0 || !Number.isSafeInteger(clock) || clock < 0) {
      invalidArgument(`state vector entry ${client}→${clock} is not a pair of non-negative safe integers`)
    }
  }
  entries.sort((a, b) => b[0] - a[0])
  const w = new ByteWriter().varUint(entries.length)
  for (const [client, clock] of entries) w.varUint(client).varUint(clock)
  return w.finish()
}

/**
 * Builds a V1 update from already-encoded struct runs and a delete set (used by splitUpdate and by
 * the relay to re-frame parts of a parsed update). Runs and delete-set entries must be in strictly
 * descending client order so the result is something parseUpdate accepts; the struct bytes are
 * copied as-is and not re-validated.
 *
 * @example buildUpdate([{ client, startClock: s.clock, count: 1, bytes: input.subarray(s.start, s.end) }])
 */
export function buildUpdate(runs: readonly StructRun[], deleteSet: readonly ParsedDeleteSet[] = []): Uint8Array {
  const w = new ByteWriter().varUint(runs.length)
  let prev = Number.POSITIVE_INFINITY
  for (const run of runs) {
    if (!Number.isSafeInteger(run.client) || run.client < 0 || run.client >= prev) {
      invalidArgument('struct runs must have distinct clients in descending order')
    }
    if (!Number.isSafeInteger(run.count) || run.count < 1 || run.bytes.length < run.count * MIN_STRUCT_BYTES) {
      invalidArgument(`struct run for client ${run.client} has a bad count`)
    }
    if (!Number.isSafeInteger(run.startClock) || run.startClock < 0) invalidArgument('bad startClock')
    prev = run.client
    w.varUint(run.count).varUint(run.client).varUint(run.startClock).bytes(run.bytes)
  }
  writeDeleteSet(w, deleteSet)
  return w.finish()
}

function writeDeleteSet(w: ByteWriter, ds: readonly ParsedDeleteSet[]): void {
  w.varUint(ds.length)
  let prev = Number.POSITIVE_INFINITY
  for (const { client, ranges } of ds) {
    if (!Number.isSafeInteger(client) || client < 0 || client >= prev || ranges.length === 0) {
      invalidArgument('delete set entries must have ranges and distinct clients in descending order')
    }
    prev = client
    w.varUint(client).varUint(ranges.length)
    for (const [clock, len] of ranges) w.varUint(clock).varUint(len)
  }
}

/** Size of a group header for `count` structs. */
const headerSize = (count: number, client: number, startClock: number) =>
  varUintLength(count) + varUintLength(client) + varUintLength(startClock)

/**
 * Splits one V1 update into V1 updates of at most `maxBytes` each; applying them in order is
 * equivalent to applying the original. A single struct (or single delete range) larger than
 * `maxBytes` becomes a piece of its own. The delete set goes into the last piece, or into pieces
 * of its own after the struct pieces if it does not fit.
 *
 * Why this is safe: struct bytes are position-independent apart from their implicit clock, which
 * each new group header restates. An item whose origin or parent ends up in another piece is
 * fine: Yjs parks it in pendingStructs and integrates it once the missing piece arrives.
 *
 * The input is parsed strictly (limits default to defaultUpdateLimits without maxBytes,
 * maxStructs and maxDeleteRanges, since big updates are what this is for). An update that already
 * fits is returned as a single copy.
 */
export function splitUpdate(bytes: Uint8Array, maxBytes: number, limits?: Partial<UpdateLimits>): Uint8Array[] {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) invalidArgument('maxBytes must be a positive integer')
  const unbounded = { maxBytes: Infinity, maxStructs: Infinity, maxDeleteRanges: Infinity }
  const p = parseUpdate(bytes, { ...unbounded, ...limits })
  if (bytes.length <= maxBytes || isEmptyUpdate(p)) return [bytes.slice()]

  const pieces: Uint8Array[] = []
  type Run = { client: number; startClock: number; count: number; from: number; to: number }
  let runs: Run[] = []
  let runsSize = 0 // Σ header + struct bytes over `runs`
  const pieceSize = (nRuns: number, body: number, dsBytes: number) => varUintLength(nRuns) + body + dsBytes
  const flush = (ds: readonly ParsedDeleteSet[] = []) => {
    const built = runs.map((r) => ({ ...r, bytes: bytes.subarray(r.from, r.to) }))
    pieces.push(buildUpdate(built, ds))
    runs = []
    runsSize = 0
  }

  for (const g of p.groups) {
    let run: Run | undefined
    for (const s of g.structs) {
      const size = s.end - s.start
      let delta: number
      let nRuns = runs.length
      if (run) {
        delta = headerSize(run.count + 1, g.client, run.startClock) - headerSize(run.count, g.client, run.startClock) + size
      } else {
        delta = headerSize(1, g.client, s.clock) + size
        nRuns++
      }
      // 1 = the empty delete set every non-final piece ends with.
      if (runs.length > 0 && pieceSize(nRuns, runsSize + delta, 1) > maxBytes) {
        flush()
        run = undefined
        delta = headerSize(1, g.client, s.clock) + size
      }
      if (run) {
        run.count++
        run.to = s.end
      } else {
        run = { client: g.client, startClock: s.clock, count: 1, from: s.start, to: s.end }
        runs.push(run)
      }
      runsSize += delta
    }
  }

  const dsBytes = bytes.length - p.deleteSetStart
  if (p.deleteSet.length === 0 || (runs.length > 0 && pieceSize(runs.length, runsSize, dsBytes) <= maxBytes)) {
    if (runs.length > 0) flush(p.deleteSet)
    return pieces
  }
  if (runs.length > 0) flush()
  // Delete-set-only pieces: `00` (no groups) • delete set, split between ranges when too big.
  let part: ParsedDeleteSet[] = []
  let partSize = 0 // Σ entry bytes over `part`
  for (const { client, ranges } of p.deleteSet) {
    let entry: ParsedDeleteSet | undefined
    for (const range of ranges) {
      const rangeSize = varUintLength(range[0]) + varUintLength(range[1])
      const entrySize = (e: ParsedDeleteSet | undefined, n: number) =>
        e ? varUintLength(n) - varUintLength(n - 1) : varUintLength(client) + 1
      let delta = entrySize(entry, (entry?.ranges.length ?? 0) + 1) + rangeSize
      const nEntries = part.length + (entry ? 0 : 1)
      if (part.length > 0 && 1 + varUintLength(nEntries) + partSize + delta > maxBytes) {
        pieces.push(buildUpdate([], part))
        part = []
        partSize = 0
        entry = undefined
        delta = entrySize(undefined, 1) + rangeSize
      }
      if (entry) entry.ranges.push(range)
      else {
        entry = { client, ranges: [range] }
        part.push(entry)
      }
      partSize += delta
    }
  }
  if (part.length > 0) pieces.push(buildUpdate([], part))
  return pieces
}
