/**
 * The relay's engine, independent of HTTP: rooms, admission, ingest with group commit,
 * catch-up from the store, and fan-out. It holds no Y.Doc and never decodes Yjs content:
 * rows are opaque bytes indexed by (client, clock) and a per-room sequence number.
 */
import type { WebSocket } from 'ws'
import { isPetrelError } from '../shared/errors.js'
import { type Admission, AdmissionKind, readRecord, readSnapshotBody, RecordKind } from '../shared/records.js'
import {
  EMPTY_SYNC_STEP2,
  RoomMessage,
  WantParts,
  SyncStep,
  writeAck,
  writeCursor,
  readDeviceAck,
  type ReceiptEntry,
  writeReceipts,
  writeRefused,
  writeSyncMessage,
} from '../shared/room-messages.js'
import { randomClientId } from '../shared/client-id.js'
import { constantTimeEqual } from '../shared/crypto/index.js'
import { concatBytes } from '../shared/crypto/hash.js'
import { CloseCode, FrameType, MAX_ROOMS_LISTED, Reason, roomFrameHeader, StrictReader, writeFrame } from '../shared/wire.js'
import { encodeStateVector, parseStateVector, parseUpdate } from '../shared/yjs-v1.js'
import { OUTER_RECORDS } from '../shared/outer-keys.js'
import { Committer } from './committer.js'
import type { Connection } from './connection.js'
import { type RelayLimits, recordAllowance } from './limits.js'
import type { Logger } from './log.js'
import type { RelayMetrics } from './metrics.js'
import { blankPart, recordsUpdate, type RowPart, rowStructs, splitAtRecords, UpdateRefused, type ValidatedRow, type ValidatedUpdate, validateOuterUpdate } from './outer-update.js'
import { checkGenesis, type OpenRow, Room, type RoomMemberConn, type RoomPeer } from './room.js'
import { encodePage, pageRows, rowsMessage } from './rows.js'
import { gcStruct } from './store/compaction.js'
import type { NewRow, RelayStore, Row } from './store/relay-store.js'
import type { BusMessage, FanoutBus } from './bus/fanout-bus.js'

/** Metric name and message per permanent refusal. */
const REFUSAL_TEXT: Record<number, [string, string]> = {
  [Reason.TooLarge]: ['envelope too large', 'envelope larger than the relay accepts'],
  [Reason.QuotaExceeded]: ['conversation full', 'the conversation holds as much as the relay stores'],
  [Reason.QuotaExceededForGood]: ['conversation full', 'the conversation holds as much as the relay stores; a blank stands in its place'],
  [Reason.Forbidden]: ['record refused', 'record not valid here'],
  [Reason.StaleEpoch]: ['stale epoch', 'sealed under a key epoch that is no longer current'],
}

type DeviceChange = { room: string; device: string; member: boolean }
const NO_CHANGES: DeviceChange[] = []

/** An awareness update the relay passes on at most (client/room-awareness.ts takes 4 entries of at most 1 KiB). */
export const MAX_AWARENESS_BYTES = 8 * 1024
/** Rows a catch-up reads at once unless RelayOptions.catchUpPageRows says otherwise. */
const CATCH_UP_PAGE_ROWS = 2000
/** Rows compaction reads per turn of the event loop when it looks for rows that carry records. */
const COMPACTION_SCAN_ROWS = 64
const CATCH_UP_MESSAGE_BYTES = 256 * 1024
/** A catch-up sends its next page once at most this much waits to be written to the socket (16 pages). */
const CATCH_UP_UNSENT_BYTES = 4 * 1024 * 1024
/**
 * A peer still catching up buffers at most this many live deliveries, and this many bytes of
 * them (a row may hold a pipelined run, up to OPEN_ROW_MAX_BYTES), before it is reset.
 */
const MAX_BUFFERED = 50_000
const MAX_BUFFERED_BYTES = 32 * 1024 * 1024

/** Rooms read again at once after the bus came back (each reads a whole room from the store). */
const REREAD_AT_ONCE = 4

export class RelayCore {
  readonly connections = new Set<Connection>()
  /**
   * Sockets of connections the relay closed whose peer has not answered the close yet (ws
   * waits up to 30 s). They are no longer connections, but shutdown must still end them.
   */
  readonly closingSockets = new Set<WebSocket>()
  /** Open connections per remote address, for the per-address limit. */
  /**
   * Connections per address. The entry also holds the address string every connection from it
   * shares: each upgrade reads its own copy from the socket, 32 bytes per idle connection.
   */
  private readonly perAddress = new Map<string, { ip: string; n: number }>()
  private readonly rooms = new Map<string, Promise<Room | undefined>>()
  private readonly committer: Committer
  /**
   * One timer walks every connection's deadlines (authentication, idle, heartbeat): two timers
   * per connection were a measurable share of an idle connection's memory.
   */
  private readonly sweeper: NodeJS.Timeout

  constructor(
    readonly store: RelayStore,
    readonly limits: RelayLimits,
    readonly log: Logger,
    readonly metrics: RelayMetrics,
    readonly bus: FanoutBus,
    readonly node: string,
    /** RelayOptions.spareSnapshotParts: live decliners get placeholders for parts. */
    readonly spareSnapshotParts = true,
    /** RelayOptions.catchUpPageRows. */
    private readonly catchUpPageRows = CATCH_UP_PAGE_ROWS,
  ) {
    this.committer = new Committer(store, (s) => metrics.storeLatency.observe({ op: 'append' }, s))
    const tick = Math.max(10, Math.min(1000, limits.authTimeoutMs / 4, limits.heartbeatMs / 2, limits.idleTimeoutMs / 4))
    this.sweeper = setInterval(() => {
      for (const conn of this.connections) conn.tick()
    }, tick)
    this.sweeper.unref()
    bus.subscribe((m) => this.onBus(m))
    // Messages may have been missed while the bus was away: re-read every room we serve, its
    // rows and its records. Rows alone left a node that missed a key rotation refusing the new
    // epoch's envelopes as stale, and one that missed a removal serving the removed member.
    bus.onReconnect(() => {
      // Both of the bus's connections coming back ring this twice: one pass for both.
      if (this.rereading) return
      this.rereading = true
      setTimeout(() => {
        this.rereading = false
        void this.rereadRooms()
      }, 100).unref()
    })
  }

  /** Set while a re-read of every room after the bus came back is about to start. */
  private rereading = false

  /**
   * After the bus was away: every room this node serves is read again (rows, records, receipts),
   * a few at a time (each is a read of the whole room), and rung again for the other nodes.
   */
  private async rereadRooms(): Promise<void> {
    const rooms = [...this.rooms.values()]
    const one = async (p: Promise<Room | undefined>) => {
      const room = await p
      if (!room) return
      await room.run(() => this.refreshRecords(room, true))
      await this.tail(room)
      // What this node published meanwhile was lost too, and the nodes that kept the bus
      // do not re-read on their own: ring again for this room's rows (records are rows
      // too: a node tailing one re-reads the membership) and receipts. Not a 'records'
      // ring: each makes every other node read the whole room, for every room at once.
      const node = this.node
      void this.bus.publish({ kind: 'rows', room: room.id, node, seq: room.committedSeq })
      for (const entry of room.receipts.values()) void this.bus.publish({ kind: 'receipts', room: room.id, node, entry })
    }
    const worker = async () => {
      for (let p = rooms.shift(); p; p = rooms.shift()) {
        await one(p).catch((err) => this.log.error('re-reading a room after the bus came back failed', { error: (err as Error).message }))
      }
    }
    await Promise.all(Array.from({ length: REREAD_AT_ONCE }, worker))
  }

  /**
   * May another connection from `ip` be accepted? Counts it when it may, and returns the
   * address string for the connection to keep (one shared copy per address).
   */
  admitAddress(ip: string): string | undefined {
    const entry = this.perAddress.get(ip)
    if ((entry?.n ?? 0) >= this.limits.maxConnectionsPerIp) return undefined
    if (entry) {
      entry.n++
      return entry.ip
    }
    this.perAddress.set(ip, { ip, n: 1 })
    return ip
  }

  /** Give back an address's slot (a connection closed, or its upgrade failed). */
  releaseAddress(ip: string): void {
    const entry = this.perAddress.get(ip)
    if (entry && --entry.n <= 0) this.perAddress.delete(ip)
  }

  connectionClosed(conn: Connection): void {
    if (this.connections.delete(conn)) this.releaseAddress(conn.ip)
  }

  /** After authentication: every conversation the device is a member of, so it can open them. */
  async sendRooms(conn: Connection): Promise<void> {
    const rooms = await this.store.roomsOfDevice(conn.deviceId)
    for (let i = 0; i < rooms.length; i += MAX_ROOMS_LISTED) {
      if (conn.isClosed) return
      conn.send(writeFrame({ type: FrameType.Rooms, rooms: rooms.slice(i, i + MAX_ROOMS_LISTED) }))
    }
  }

  /** Tell a device's open connections on this node that it was added to `room`. */
  private tellDevice(device: string, room: string): void {
    let frame: Uint8Array | undefined
    for (const conn of this.connections) {
      if (conn.deviceId !== device || conn.isClosed) continue
      frame ??= writeFrame({ type: FrameType.Rooms, rooms: [room] })
      conn.send(frame)
    }
  }

  /** Index changes for devices that entered or left `room` since `before`. */
  private memberChanges(room: Room, before: ReadonlySet<string>): DeviceChange[] {
    const changes: DeviceChange[] = []
    const now = room.membership.devices
    for (const device of now.keys()) if (!before.has(device)) changes.push({ room: room.id, device, member: true })
    for (const device of before) if (!now.has(device)) changes.push({ room: room.id, device, member: false })
    return changes
  }

  /** Once the index is durable: the added devices hear of it, on every node. */
  private announce(changes: DeviceChange[]): void {
    for (const c of changes) {
      if (!c.member) continue
      this.tellDevice(c.device, c.room)
      void this.bus.publish({ kind: 'member', room: c.room, node: this.node, device: c.device })
    }
  }

  private onBus(m: BusMessage): void {
    if (m.kind === 'member') return this.tellDevice(m.device, m.room)
    const p = this.rooms.get(m.room)
    if (!p) return
    if (m.kind === 'awareness') {
      p.then((room) => {
        if (room) for (const [peer, state] of room.peers) if (state.state === 'live') peer.deliver(room.id, m.message)
      }).catch((err) => this.log.error('bus message failed', { room: m.room, error: (err as Error).message }))
      return
    }
    void p.then(async (room) => {
      if (!room) return
      if (m.kind === 'rows') {
        if (m.seq > room.committedSeq) {
          const end = this.metrics.busLag.startTimer()
          await this.tailUntilRead(room)
          end()
        }
      } else if (m.kind === 'receipts') {
        this.mergeReceipt(room, m.entry, undefined)
      } else await room.run(() => this.refreshRecords(room))
    }).catch((err) => this.log.error('bus message failed', { room: m.room, error: (err as Error).message }))
  }

  /**
   * Tail the room, and should the store fail under it (a database gone for a moment), try
   * again, backing off from 1 s to 30 s, until it reads: the doorbell that asked rings once, and
   * a node that gave up served none of those rows until the next one.
   */
  private async tailUntilRead(room: Room, wait = 1000): Promise<void> {
    try {
      await this.tail(room)
    } catch (err) {
      this.log.error('reading rows another node stored failed; trying again', { room: room.id, error: (err as Error).message, retryMs: wait })
      const timer = setTimeout(() => {
        if (this.closing || this.rooms.get(room.id) === undefined || room.failed) return
        void this.tailUntilRead(room, Math.min(30_000, wait * 2))
      }, wait)
      timer.unref()
    }
  }

  /**
   * Re-read a room's membership records (another node admitted someone), and with `receipts`
   * its receipts too (after the bus was away: those of other nodes' devices were missed).
   */
  private async refreshRecords(room: Room, receipts = false): Promise<void> {
    const before = new Set(room.membership.devices.keys())
    const snap = await this.store.loadRoom(room.id)
    if (!snap) return
    if (receipts) for (const r of snap.receipts) this.mergeReceipt(room, { device: r.device, stored: r.stored, read: r.read, storedAt: r.storedAt, readAt: r.readAt }, undefined)
    await room.loadRecords(snap.records)
    // Another node removed or unlinked someone: this node stops serving them at once too.
    this.evictNonMembers(room, before)
    this.maybeCompact(room)
  }

  private loadRoom(id: string): Promise<Room | undefined> {
    let p = this.rooms.get(id)
    if (!p) {
      p = (async () => {
        await this.committer.idle()
        const snap = await this.store.loadRoom(id)
        if (!snap) return undefined
        const room = new Room(id, snap.clients, snap.maxSeq)
        room.bytes = await this.store.roomBytes(id)
        await room.loadRecords(snap.records)
        for (const r of snap.receipts) room.receipts.set(r.device, { device: r.device, stored: r.stored, read: r.read, storedAt: r.storedAt, readAt: r.readAt })
        this.metrics.roomsOpen++
        return room
      })()
      this.rooms.set(id, p)
      const loading = p
      p.then(
        (room) => {
          if (room) this.loadedRooms.set(loading, room)
          if (!room && this.rooms.get(id) === p) this.rooms.delete(id)
        },
        () => this.rooms.delete(id),
      )
    }
    return p
  }

  async openRoom(conn: Connection, id: string, admission: Admission): Promise<void> {
    const deny = (reason: number, message: string) => {
      this.metrics.reject('room denied')
      conn.send(writeFrame({ type: FrameType.Denied, room: id, reason, message }))
    }
    let room = await this.loadRoom(id)
    if (!room) {
      const genesis = await checkGenesis(id, conn.device!, admission)
      if (typeof genesis === 'string') return deny(Reason.UnknownRoom, genesis)
      // Two creators racing for one id cannot both win: the id binds the creator's key.
      try {
        await this.store.createRoom(id, genesis, Date.now())
      } catch (err) {
        if (!isPetrelError(err, 'storage_failed')) throw err
      }
      // A load that began meanwhile (another device opening the new room) is this room's one
      // Room object if it saw the commit: deleting it for a load of our own made two, and the
      // joiner's admission went to the one nobody else was in (on PostgreSQL, ~3 joins in 8
      // right after the creation: the join waited out its 15 s, and removing that member was
      // refused afterwards). One that read too early is replaced.
      const pending = this.rooms.get(id)
      room = pending ? await pending : undefined
      if (!room) {
        if (this.rooms.get(id) === pending) this.rooms.delete(id)
        room = await this.loadRoom(id)
      }
      if (!room) return deny(Reason.Internal, 'could not create the conversation')
      const created = room
      await new Promise<void>((resolve, reject) =>
        this.committer.add({ rows: [], bindings: [], records: [], devices: this.memberChanges(created, new Set()) }, () => resolve(), reject),
      )
    }
    const r = room
    const result = await r.run(async () => {
      const full = r.bytes >= this.limits.maxRoomBytes + recordAllowance(this.limits)
      const verdict = await r.admit(conn.device!, admission.kind === AdmissionKind.Genesis ? { kind: AdmissionKind.None } : admission, Date.now(), full)
      // Full, or not a member: another node may have admitted this device already.
      if (!verdict.ok && (verdict.reason === Reason.NotMember || verdict.reason === Reason.QuotaExceeded)) {
        // Another node may have admitted this device: look at the store before refusing.
        await this.refreshRecords(r)
        if (r.isMemberDevice(conn.device!)) return { ok: true as const, records: [] }
      }
      if (verdict.ok && verdict.records.length > 0) {
        const devices = [{ room: id, device: conn.deviceId, member: true }]
        // The records that admitted the device go into the log too, as a row of its own: the
        // log is all devices fold. Left to the joiner (it writes them next), one that never did
        // was a member only the relay knew of, and every key rotation, wrapped for the members
        // the devices knew, was refused for good: a removed member read on.
        const v = validateOuterUpdate(recordsUpdate(this.freeClient(r), verdict.records), conn.deviceId, r.clients, this.limits)
        const recordParts = new Set(v.rows.flatMap((row) => row.parts))
        this.commitUpdate(conn, r, v, verdict.records, recordParts, devices)
        await this.committer.idle()
        if (r.failed) return { ok: false as const, reason: Reason.Internal, message: 'could not store the admission' }
      }
      return verdict
    })
    if (!result.ok) return deny(result.reason, result.message)
    if (conn.isClosed) return
    conn.addRoom(id)
    r.peers.set(conn, { state: 'catching-up', buffer: [], bufferedBytes: 0, spareParts: false, spareInCatchUp: false })
    conn.send(writeFrame({ type: FrameType.Opened, room: id }))
  }

  /** An outer client id no device uses in the room yet (a uint32, as Yjs draws them). */
  private freeClient(room: Room): number {
    for (;;) {
      const client = randomClientId()
      if (client !== 0 && !room.clients.has(client)) return client
    }
  }

  leaveRoom(conn: Connection, id: string): void {
    const p = this.rooms.get(id)
    if (!p) return
    void p.then(async (room) => {
      if (!room) return
      room.peers.delete(conn)
      if (room.peers.size > 0) return
      await this.committer.idle()
      if (room.peers.size === 0 && this.rooms.get(id) === p) {
        this.rooms.delete(id)
        this.metrics.roomsOpen--
      }
    })
  }

  /**
   * Rooms whose load has finished, by the promise `rooms` holds for them: a room message for a
   * loaded room is handled without waiting a turn, and a room dropped from `rooms` is no longer
   * found here either.
   */
  private readonly loadedRooms = new WeakMap<Promise<Room | undefined>, Room>()

  /** A room message from a member's connection; a promise only when part of it has to wait. */
  onRoomMessage(conn: Connection, id: string, message: Uint8Array): Promise<void> | undefined {
    const p = this.rooms.get(id)
    if (p === undefined) return undefined
    const room = this.loadedRooms.get(p)
    if (room === undefined) return p.then((r) => (r ? this.roomMessage(conn, r, message) : undefined))
    return this.roomMessage(conn, room, message)
  }

  private roomMessage(conn: Connection, room: Room, message: Uint8Array): Promise<void> | undefined {
    if (!room.peers.has(conn)) return undefined
    const id = room.id
    const r = new StrictReader(message)
    const type = r.varUint(255)
    switch (type) {
      case RoomMessage.Sync: {
        const step = r.varUint(2)
        const payload = r.varBytes(message.length)
        r.end()
        if (step === SyncStep.Step1) return this.catchUp(conn, room, parseStateVector(payload))
        return this.ingest(conn, room, payload)
      }
      case RoomMessage.SnapshotPart: {
        const payload = r.varBytes(message.length)
        r.end()
        return this.ingest(conn, room, payload, true)
      }
      case RoomMessage.WantParts: {
        const want = r.uint8()
        r.end()
        if (want > WantParts.SpareUnlessNeeded) {
          conn.violation('malformed room message', `want-parts ${want}`)
          return undefined
        }
        const state = room.peers.get(conn)
        if (!state) return undefined
        if (want === WantParts.SpareUnlessNeeded) state.spareInCatchUp = true
        else {
          state.spareParts = want === WantParts.Spare
          if (want === WantParts.Whole) state.spareInCatchUp = false
        }
        return undefined
      }
      case RoomMessage.Awareness: {
        // Forwarded as it is, never stored: it is ephemeral (and encrypted by clients).
        const update = r.varBytes(message.length)
        r.end()
        // A device's own typing state is a few hundred bytes (client/presence.ts), and devices
        // refuse more than 4 KiB of it (room-awareness.ts): larger is not passed on to every
        // peer, on every node.
        if (update.length > MAX_AWARENESS_BYTES) {
          this.metrics.reject('awareness too large')
          return
        }
        for (const [peer, state] of room.peers) if (peer !== conn && state.state === 'live') peer.deliver(id, message)
        // And to the room's live peers on other nodes: typing crossed no node before.
        void this.bus.publish({ kind: 'awareness', room: id, node: this.node, message })
        return
      }
      case RoomMessage.QueryAwareness:
        return
      case RoomMessage.DeviceAck: {
        const ack = readDeviceAck(r)
        r.end()
        this.onDeviceAck(conn, room, ack)
        return undefined
      }
      default:
        conn.violation('unknown room message', `room message type ${type}`)
        return undefined
    }
  }

  /**
   * An update from a member. With nothing queued on the room and no record in it (the usual
   * update: envelopes only), it is checked and handed to the committer now; an update with
   * records waits its turn in the room's queue, since applying a record is asynchronous and
   * the envelopes after it may depend on it.
   */
  private ingest(conn: Connection, room: Room, update: Uint8Array, asPart = false): Promise<void> | undefined {
    if (room.busy === 0) {
      const v = this.validated(conn, room, update, asPart)
      if (v === undefined) return undefined
      if (v.records.length === 0) {
        if (v.ownDuplicates.length > 0) void this.reacknowledge(conn, room, v.ownDuplicates)
        for (const row of v.rows) for (const part of row.parts) this.refuseIfStale(room, row, part, v.refused)
        this.commitUpdate(conn, room, v, [], undefined, NO_CHANGES)
        return undefined
      }
    }
    return room.run(() => this.ingestInTurn(conn, room, update, asPart))
  }

  /** The update checked against the room, or undefined when it is refused (and the sender told). */
  private validated(conn: Connection, room: Room, update: Uint8Array, asPart: boolean): ValidatedUpdate | undefined {
    try {
      // Past twice the records' allowance (only placeholders of refused records get there: a
      // member sending records into a room that refuses them) nothing more is stored, and nothing
      // is refused item by item: the sender's writes stay pending, and go again on its next sync.
      if (room.bytes >= this.limits.maxRoomBytes + 2 * recordAllowance(this.limits)) {
        throw new UpdateRefused(Reason.QuotaExceeded, 'the conversation is full: nothing more is stored until it has room')
      }
      const remaining = this.limits.maxRoomBytes - room.bytes
      const v = validateOuterUpdate(update, conn.deviceId, room.clients, this.limits, remaining, remaining + recordAllowance(this.limits))
      if (asPart) {
        v.part = true
        if (v.refused.length > 0) room.partsRefused.set(conn.deviceId, (room.partsRefused.get(conn.deviceId) ?? 0) + v.refused.length)
      }
      return v
    } catch (err) {
      if (err instanceof UpdateRefused) {
        this.metrics.reject(err.reason === Reason.Gap ? 'gap' : err.reason === Reason.QuotaExceeded ? 'conversation full' : 'client id taken')
        conn.deliver(room.id, writeRefused(err.reason, err.message, []))
        // After a gap the client resends from what the relay has: ask for it.
        if (err.reason === Reason.Gap) conn.deliver(room.id, writeSyncMessage(SyncStep.Step1, encodeStateVector(room.stateVector())))
        return undefined
      }
      throw err
    }
  }

  /** An envelope sealed under an old (or unknown) key is refused and blanked: a removed member may still hold the key. */
  private refuseIfStale(room: Room, row: { client: number }, part: RowPart, refused: ValidatedUpdate['refused']): boolean {
    if (part.record !== undefined || part.epoch === undefined || isCurrentKey(room, part.epoch, part.keyCheck!)) return false
    refused.push({ client: row.client, clock: part.clock, len: 1, reason: Reason.StaleEpoch })
    blankPart(part)
    return true
  }

  private async ingestInTurn(conn: Connection, room: Room, update: Uint8Array, asPart: boolean): Promise<void> {
    const v = this.validated(conn, room, update, asPart)
    if (v === undefined) return
    if (v.ownDuplicates.length > 0) void this.reacknowledge(conn, room, v.ownDuplicates)
    // Records and envelope epochs are decided struct by struct, in order: a record may start
    // the epoch the envelopes after it are sealed under. A refused one is blanked (GC
    // placeholder) and reported, so the device's clocks stay contiguous.
    const records: Uint8Array[] = []
    const refused = v.refused
    const recordParts = v.records.length > 0 ? new Set(v.rows.flatMap((row) => row.parts.filter((p) => p.record !== undefined))) : undefined
    // Who was a member before this update's records: only needed when it carries records.
    const membersBefore = v.records.length > 0 ? new Set(room.membership.devices.keys()) : undefined
    let envelopesRefused = refused.length
    // This update's own refusals included (validated counted them), if it came as a part.
    const partsRefusedBefore = room.partsRefused.get(conn.deviceId) ?? 0
    for (const row of v.rows) {
      for (const part of row.parts) {
        if (part.record) {
          const snapshot = snapshotVerdict(part.record, room, envelopesRefused + partsRefusedBefore)
          // A snapshot record, taken or not, ends its device's count of refused parts.
          if (snapshot !== 'other') room.partsRefused.delete(conn.deviceId)
          const verdict = snapshot === 'refuse' ? false : await room.applyUploadedRecord(part.record, Date.now())
          if (verdict === true) continue
          if (verdict !== false) {
            records.push(verdict)
            continue
          }
          refused.push({ client: row.client, clock: part.clock, len: 1, reason: Reason.Forbidden })
          blankPart(part)
        } else if (this.refuseIfStale(room, row, part, refused)) envelopesRefused++
      }
    }
    const devices = records.length > 0 && membersBefore ? this.memberChanges(room, membersBefore) : NO_CHANGES
    const uploaderDenial = records.length > 0 && membersBefore ? this.evictNonMembers(room, membersBefore, conn) : undefined
    this.commitUpdate(conn, room, v, records, recordParts, devices, uploaderDenial)
  }

  /** Claims the update's clocks and hands its rows to the committer; ✓ (or a refusal) goes back once they are durable. */
  private commitUpdate(
    conn: Connection,
    room: Room,
    v: ValidatedUpdate,
    records: Uint8Array[],
    recordParts: Set<RowPart> | undefined,
    devices: DeviceChange[],
    afterAcks?: () => void,
  ): void {
    const refused = v.refused
    if (room.failed || (v.rows.length === 0 && v.refused.length === 0)) return
    if (this.appendToOpenRow(conn, room, v, records, devices)) return
    const cut = recordParts ? v.rows.flatMap((row) => splitAtRecords(row, (p) => recordParts.has(p))) : v.rows
    const rows: NewRow[] = cut.map((row) => {
      // A part's row, unless it holds the record (its own row) or a refused envelope's blank.
      const part = v.part === true && refused.length === 0 && !row.parts.some((p) => p.record !== undefined)
      return { room: room.id, client: row.client, clock: row.clock, len: row.len, count: row.count, structs: rowStructs(row), part }
    })
    const bindings = v.newClients.map((client) => ({ room: room.id, client, device: conn.deviceId }))
    // Claim the clocks now, so the next update from this device validates against them.
    for (const b of bindings) room.clients.set(b.client, { device: conn.deviceId, next: 0 })
    for (const row of rows) room.clients.get(row.client)!.next = row.clock + row.len
    // Records are stored twice, in their row and in the records table, and the store counts
    // both (roomBytes): counted once here, a restart shrank the records' allowance by all of them.
    let recordBytes = 0
    for (const r of records) recordBytes += r.length
    room.bytes += v.bytes + recordBytes
    room.uncommittedBytes += v.bytes + recordBytes
    const open = this.openRowFor(conn, room, v, records, devices, rows, cut)
    // Once durable (or failed), the store's own count holds them (or never will).
    const settled = () => {
      room.uncommittedBytes -= recordBytes + (open ? open.bytes : v.bytes)
    }
    // Kept with the rows, so a device that loses the `refused` below with its connection is told
    // again when it asks about those clocks (ownRowAcks), not acknowledged as if they were stored.
    // Only where a blank stands: a part refused for a full room after the last one kept
    // (QuotaExceeded) was not stored, and its clocks are stored later when sent again.
    const kept = refused.filter((r) => r.reason !== Reason.QuotaExceeded)
    const refusals = kept.length === 0 ? undefined : kept.map(({ client, clock, len, reason }) => ({ room: room.id, client, clock, len, reason }))
    this.committer.add(
      { rows, bindings, records: records.map((bytes) => ({ room: room.id, bytes })), devices, refusals },
      (seqs) => {
        settled()
        this.metrics.rowsStored += rows.length
        // The rows become stored rows in place (no copies on this hot path).
        const stored = rows as Row[]
        for (let i = 0; i < stored.length; i++) stored[i]!.seq = seqs[i]!
        // ✓ for the author: durable now — except what was refused (a placeholder stands there).
        const blanked = refused.length === 0 ? NOTHING_BLANKED : new Set(refused.map((r) => `${r.client}:${r.clock}`))
        for (const row of stored) conn.deliver(room.id, writeAck(row.seq, ackRanges(row, blanked)))
        for (const reason of refused.length === 0 ? [] : new Set(refused.map((r) => r.reason))) {
          const [metric, message] = REFUSAL_TEXT[reason] ?? ['refused', 'refused']
          this.metrics.reject(metric)
          const ranges = refused.filter((r) => r.reason === reason).map(({ client, clock, len }) => ({ client, clock, len }))
          conn.deliver(room.id, writeRefused(reason, message, ranges))
        }
        this.advance(room, stored)
        if (stored.length > 0) void this.bus.publish({ kind: 'rows', room: room.id, node: this.node, seq: stored[stored.length - 1]!.seq })
        if (records.length > 0) void this.bus.publish({ kind: 'records', room: room.id, node: this.node })
        this.announce(devices)
        if (records.length > 0) this.maybeCompact(room)
        afterAcks?.()
      },
      (err) => {
        settled()
        afterAcks?.()
        this.storeFailed(room, err)
      },
      open && (() => this.closeOpenRow(room, open)),
    )
  }

  /**
   * A pipelining device sends one update per message, and a commit takes everything that
   * arrived meanwhile (thousands of updates at full load). Consecutive updates of one
   * connection and client, contiguous in clock, become one row — as if the device had sent
   * them as one update — so the commit writes one row, and the device gets one ✓, per run
   * rather than per message. Only plain updates take part (one row of envelopes, nothing
   * refused, no records, no new client): anything else keeps a row of its own.
   */
  private appendToOpenRow(conn: Connection, room: Room, v: ValidatedUpdate, records: Uint8Array[], devices: DeviceChange[]): boolean {
    const open = room.openRow
    if (!open || open.conn !== conn || !isPlainUpdate(v, records, devices)) return false
    const row = v.rows[0]!
    const bytes = v.bytes
    if (open.row.client !== row.client || open.row.clock + open.row.len !== row.clock || open.bytes + bytes > OPEN_ROW_MAX_BYTES) return false
    for (const part of row.parts) open.parts.push(part.bytes)
    open.row.len += row.len
    open.row.count += row.count
    open.bytes += bytes
    room.clients.get(row.client)!.next = row.clock + row.len
    room.bytes += bytes
    room.uncommittedBytes += bytes
    return true
  }

  /**
   * The row of a plain update stays open for the next ones until its commit takes it. Any
   * other row of the room closes it, so rows keep the order their updates arrived in.
   */
  private openRowFor(conn: Connection, room: Room, v: ValidatedUpdate, records: Uint8Array[], devices: DeviceChange[], rows: NewRow[], cut: ValidatedRow[]): OpenRow | undefined {
    room.openRow = undefined
    if (!isPlainUpdate(v, records, devices) || rows.length !== 1) return undefined
    const parts = cut[0]!.parts.map((p) => p.bytes)
    room.openRow = { conn, row: rows[0]!, parts, ownParts: parts.length, bytes: v.bytes }
    return room.openRow
  }

  private closeOpenRow(room: Room, open: OpenRow): void {
    if (room.openRow === open) room.openRow = undefined
    if (open.parts.length > open.ownParts) open.row.structs = concatBytes(...open.parts)
  }

  /**
   * After membership changed: devices that are no longer members stop being served at once,
   * also on an open connection. The uploader's own denial (a device that wrote its own leave)
   * is returned to send after the ✓ of what it wrote before the leave: denied first, the device
   * dropped those acks and showed what the others received as failed.
   */
  private evictNonMembers(room: Room, before: Set<string>, uploader?: Connection): (() => void) | undefined {
    let uploaderDenial: (() => void) | undefined
    for (const device of before) {
      if (room.membership.devices.has(device)) continue
      for (const peer of [...room.peers.keys()]) {
        const conn = peer as Connection
        if (conn.deviceId !== device) continue
        room.peers.delete(conn)
        conn.deleteRoom(room.id)
        const deny = () => conn.send(writeFrame({ type: FrameType.Denied, room: room.id, reason: Reason.NotMember, message: 'removed from the conversation' }))
        if (conn === uploader) uploaderDenial = deny
        else deny()
      }
    }
    return uploaderDenial
  }

  /**
   * Fan rows out to this node's peers, strictly in sequence order. Rows we just stored go out
   * at once when they directly follow what we delivered; otherwise another node stored rows
   * in between and we read them all from the store, in order.
   */
  private advance(room: Room, rows: Row[]): void {
    if (rows.length === 0) return
    const contiguous = rows.every((row, i) => row.seq === room.committedSeq + 1 + i)
    if (!contiguous || room.tailing) {
      for (const row of rows) room.countedSeqs.add(row.seq)
      void this.tail(room)
      return
    }
    for (const row of rows) this.fanOut(room, row)
  }

  private fanOut(room: Room, row: Row): void {
    room.committedSeq = row.seq
    const owner = room.clients.get(row.client)?.device
    // Encoded once for every recipient, and only if there is one besides the author.
    let message: Uint8Array | undefined
    let placeholder: Uint8Array | undefined
    for (const [peer, state] of room.peers) {
      // The author's device already has the row (and its node sent the ack).
      if ((peer as Connection).deviceId === owner) continue
      if (row.part && state.spareParts && state.state === 'live' && this.spareSnapshotParts) {
        // A live device that holds the history skips snapshot parts: a GC struct over the same
        // clocks keeps its outer document contiguous, and live it takes it for a blank.
        placeholder ??= rowsMessage([this.sparedPart(row)])
        peer.deliver(room.id, placeholder)
        continue
      }
      message ??= rowsMessage([row])
      this.deliver(room, peer, state, message, row.seq)
    }
  }

  /**
   * A part's row as a device that does not need it gets it: one GC struct over the same clocks,
   * still marked as a part (the `rows` list), so the device tells it from compacted history.
   */
  private sparedPart(row: Row): Row {
    this.metrics.partsSpared++
    this.metrics.partBytesSpared += row.structs.length
    return { ...row, count: 1, structs: gcStruct(row.len) }
  }

  /** Read rows after what this node delivered, from the store, and fan them out in order. */
  private tail(room: Room): Promise<void> {
    room.tailing ??= (async () => {
      let records = false
      try {
        for (;;) {
          const rows = await this.store.readRows(room.id, room.committedSeq, CATCH_UP_PAGE_ROWS)
          if (rows.length === 0) break
          for (const row of rows) {
            let client = room.clients.get(row.client)
            if (!client) {
              // Bound on another node: learn the owner from the store.
              const snap = await this.store.loadRoom(room.id)
              for (const [c, info] of snap?.clients ?? []) if (!room.clients.has(c)) room.clients.set(c, info)
              client = room.clients.get(row.client)
            }
            if (client && row.clock + row.len > client.next) client.next = row.clock + row.len
            // Stored by another node: it counts against the quota here too, a record twice as
            // there (its row and the records table).
            if (!room.countedSeqs.delete(row.seq)) room.bytes += row.structs.length * (isRecordRow(row) ? 2 : 1)
            if (isRecordRow(row)) records = true
            this.fanOut(room, row)
          }
        }
        // Another node stored membership records: its 'records' doorbell may have been lost
        // (the bus away), and a removal missed here served the removed member on.
        if (records) void room.run(() => this.refreshRecords(room)).catch((err) => this.log.error('re-reading records failed', { room: room.id, error: (err as Error).message }))
      } finally {
        room.tailing = undefined
        // A counted row the tail passed without reading (compacted meanwhile) is not waited for.
        for (const seq of room.countedSeqs) if (seq <= room.committedSeq) room.countedSeqs.delete(seq)
      }
    })()
    return room.tailing
  }

  /** A device says how far its copy is stored and read; bound to the authenticated device. */
  private onDeviceAck(conn: Connection, room: Room, ack: { device: string; stored: number; read: number }): void {
    if (ack.device !== conn.deviceId) {
      this.metrics.reject('forged ack')
      this.log.warn('ack for another device refused', { device: conn.deviceId, room: room.id })
      conn.deliver(room.id, writeRefused(Reason.Forbidden, 'a device can only acknowledge for itself', []))
      return
    }
    // A device cannot hold what the relay has not stored, nor display what it does not hold.
    const stored = Math.min(ack.stored, room.committedSeq)
    const read = Math.min(ack.read, stored)
    const prev = room.receipts.get(ack.device)
    if (prev && stored <= prev.stored && read <= prev.read) return
    const now = Date.now()
    const next: ReceiptEntry = {
      device: ack.device,
      stored: Math.max(stored, prev?.stored ?? 0),
      read: Math.max(read, prev?.read ?? 0),
      storedAt: stored > (prev?.stored ?? 0) ? now : (prev?.storedAt ?? 0),
      readAt: read > (prev?.read ?? 0) ? now : (prev?.readAt ?? 0),
    }
    room.receipts.set(ack.device, next)
    this.committer.add(
      { rows: [], bindings: [], records: [], receipts: [{ room: room.id, ...next }] },
      () => {
        this.fanOutReceipt(room, next, conn)
        void this.bus.publish({ kind: 'receipts', room: room.id, node: this.node, entry: next })
        this.maybeCompact(room)
      },
      (err) => this.storeFailed(room, err),
    )
  }

  /** A receipt from another node (already durable there): merge and tell our peers. */
  private mergeReceipt(room: Room, entry: ReceiptEntry, from: Connection | undefined): void {
    const prev = room.receipts.get(entry.device)
    if (prev && entry.stored <= prev.stored && entry.read <= prev.read) return
    const next: ReceiptEntry = {
      device: entry.device,
      stored: Math.max(entry.stored, prev?.stored ?? 0),
      read: Math.max(entry.read, prev?.read ?? 0),
      storedAt: entry.stored > (prev?.stored ?? 0) ? entry.storedAt : (prev?.storedAt ?? 0),
      readAt: entry.read > (prev?.read ?? 0) ? entry.readAt : (prev?.readAt ?? 0),
    }
    room.receipts.set(entry.device, next)
    this.fanOutReceipt(room, next, from)
    this.maybeCompact(room)
  }

  /**
   * History compaction: once every member device holds the rows a snapshot covers, replace
   * them by GC placeholders (clocks and numbering stay), keeping the rows that carry signed
   * records — membership is folded from all of them. A device that has not caught up then
   * gets the snapshot instead of the rows; a device that has never needs them again.
   */
  private maybeCompact(room: Room): void {
    const snap = room.membership.snapshot
    if (!snap || snap.coversSeq <= room.compactedThrough || room.compacting) return
    for (const device of room.membership.devices.keys()) if ((room.receipts.get(device)?.stored ?? 0) < snap.coversSeq) return
    const through = snap.coversSeq
    room.compacting = (async () => {
      try {
        await this.committer.idle()
        const keep = new Set<number>()
        // Background work, read a small page per turn of the event loop and never past the
        // snapshot's rows: one read of 2,000 rows took in the snapshot's own parts (megabytes)
        // and held live traffic for 100-150 ms on a busy relay (SQLite reads are synchronous).
        for (let after = 0; after < through; ) {
          const rows = await this.store.readRows(room.id, after, Math.min(COMPACTION_SCAN_ROWS, through - after))
          if (rows.length === 0) break
          for (const row of rows) if (row.seq <= through && rowHasRecords(row)) keep.add(row.seq)
          after = rows[rows.length - 1]!.seq
          await new Promise((r) => setImmediate(r))
        }
        // Not under a catch-up's reads (see catchUp): it waits for them, and they for it.
        while (room.catchUpsReading > 0) await new Promise<void>((resolve) => room.catchUpsDone.push(resolve))
        const t0 = performance.now()
        const applying = this.store.compactRows(room.id, through, keep).finally(() => {
          room.compactionApplying = undefined
        })
        room.compactionApplying = applying
        const { removed, written } = await applying
        // What the store holds now, and what was counted but is still on its way to it: the
        // count once dropped those (a member writing during a long rewrite went past the quota).
        room.bytes = (await this.store.roomBytes(room.id)) + room.uncommittedBytes
        room.compactedThrough = through
        this.log.info('compacted', { room: room.id, through, removed, written, ms: Math.round(performance.now() - t0) })
      } catch (err) {
        // Tried again with the next receipt or snapshot, not in a loop.
        this.log.error('compaction failed', { room: room.id, error: (err as Error).message })
        return
      } finally {
        room.compacting = undefined
      }
      // A newer snapshot may have come while this one ran.
      this.maybeCompact(room)
    })()
  }

  private fanOutReceipt(room: Room, entry: ReceiptEntry, except: Connection | undefined): void {
    const message = writeReceipts([entry])
    for (const [peer, state] of room.peers) if (peer !== except && state.state === 'live') peer.deliver(room.id, message)
  }

  /**
   * Rows of this device's own clients that it may never have heard acknowledged (a lost
   * ack): everything after the last position it acknowledged itself.
   */
  private async acknowledgeOwnRows(conn: Connection, room: Room, upTo: number): Promise<void> {
    const own = [...room.clients].filter(([, c]) => c.device === conn.deviceId).map(([client]) => client)
    let after = room.receipts.get(conn.deviceId)?.stored ?? 0
    while (own.length > 0 && after < upTo && !conn.isClosed) {
      const rows = await this.store.rowsOfClientsAfter(room.id, own, after, CATCH_UP_PAGE_ROWS)
      if (rows.length === 0) break
      // One read of refusals per client a page, not per row (a round trip each on PostgreSQL).
      const refusals = new Map<number, StoredRefusal[]>()
      for (const client of new Set(rows.map((r) => r.client))) {
        const mine = rows.filter((r) => r.client === client)
        refusals.set(client, await this.store.refusalsIn(room.id, client, Math.min(...mine.map((r) => r.clock)), Math.max(...mine.map((r) => r.clock + r.len))))
      }
      for (const row of rows) if (row.seq <= upTo) this.ownRowAcks(conn, room, row.seq, row.client, row.clock, row.len, refusals.get(row.client)!)
      after = rows[rows.length - 1]!.seq
    }
  }

  /** Acknowledge again rows a device resent because it never heard our ack. */
  private async reacknowledge(conn: Connection, room: Room, ranges: Array<{ client: number; clock: number; len: number }>): Promise<void> {
    await this.committer.idle()
    for (const r of ranges) {
      const rows = await this.store.rowsCovering(room.id, r.client, r.clock, r.clock + r.len)
      if (rows.length === 0) continue
      const last = rows[rows.length - 1]!
      const refusals = await this.store.refusalsIn(room.id, r.client, rows[0]!.clock, last.clock + last.len)
      for (const row of rows) this.ownRowAcks(conn, room, row.seq, r.client, row.clock, row.len, refusals)
    }
  }

  /**
   * ✓ again for a row of the device's own, told once more: without the clocks refused in it
   * (a blank stands there), and each refusal said again. The first `refused` may have been lost
   * with the connection that carried it; acknowledged in full, a message sealed under an old key
   * showed ✓✓ to its sender and reached nobody, and Yjs held its later messages back behind it.
   */
  private ownRowAcks(conn: Connection, room: Room, seq: number, client: number, clock: number, len: number, stored: readonly StoredRefusal[]): void {
    // `stored`: the client's refusals over a span holding this row; those in the row count.
    const refusals = stored.filter((r) => r.clock < clock + len && r.clock + r.len > clock)
    if (refusals.length === 0) {
      conn.deliver(room.id, writeAck(seq, [{ client, clock, len }]))
      return
    }
    const blanked = new Set<string>()
    for (const r of refusals) for (let c = r.clock; c < r.clock + r.len; c++) blanked.add(`${client}:${c}`)
    conn.deliver(room.id, writeAck(seq, ackRanges({ client, clock, len }, blanked)))
    for (const reason of new Set(refusals.map((r) => r.reason))) {
      const [, message] = REFUSAL_TEXT[reason] ?? ['refused', 'refused']
      const ranges = refusals.filter((r) => r.reason === reason).map(({ clock: c, len: l }) => ({ client, clock: c, len: l }))
      conn.deliver(room.id, writeRefused(reason, message, ranges))
    }
  }

  private deliver(room: Room, peer: RoomMemberConn, state: RoomPeer, message: Uint8Array, seq: number) {
    if (state.state === 'live') return peer.deliver(room.id, message)
    if (state.buffer.length >= MAX_BUFFERED || state.bufferedBytes + message.length > MAX_BUFFERED_BYTES) {
      // A peer that never finishes catching up must not hold memory for ever.
      return peer.close(CloseCode.TryAgain, 'fell behind')
    }
    state.buffer.push({ message, seq })
    state.bufferedBytes += message.length
  }

  /** Answer a client's sync step 1: rows it lacks, in seq order, then synced, then our step 1. */
  private async catchUp(conn: Connection, room: Room, sv: Map<number, number>): Promise<void> {
    const state = room.peers.get(conn)
    if (!state) return
    state.state = 'catching-up'
    await this.committer.idle()
    // A compaction rewrites rows: one run of them becomes one GC row at the run's first seq. Were
    // that to land between two reads below, this catch-up would have sent the run's first rows
    // as they were and then find the rest gone, their clocks in a GC row at a seq it passed: the
    // device would wait for them until it asked again. So a catch-up waits for a rewrite under
    // way, and a rewrite waits for the catch-ups reading (compact). On one node only: in a
    // cluster another node may compact the room.
    while (room.compactionApplying) await room.compactionApplying.catch(() => undefined)
    room.catchUpsReading++
    let sparing = state.spareInCatchUp && this.spareSnapshotParts
    const upTo = room.committedSeq
    try {
      let from: number | undefined
      for (const [client, { next }] of room.clients) {
        const has = sv.get(client) ?? 0
        if (has >= next) continue
        const first = await this.store.firstRowEndingAfter(room.id, client, has)
        if (first !== undefined && (from === undefined || first < from)) from = first
      }
      let after = from === undefined ? upTo : from - 1
      // A device that asked (want-parts 2) gets placeholders of parts, as long as it has not been
      // sent a row that is one GC struct: a compacted row it lacks means it needs the snapshot
      // that stands for it, whose parts come after it (they are uploaded after the rows they
      // cover). A refused write's blank looks the same, and stops the sparing all the same.
      const header = roomFrameHeader(room.id)
      while (after < upTo && !conn.isClosed) {
        const rows = (await this.store.readRows(room.id, after, this.catchUpPageRows)).filter((row) => row.seq <= upTo)
        if (rows.length === 0) break
        after = rows[rows.length - 1]!.seq
        const missing = rows.filter((row) => row.clock + row.len > (sv.get(row.client) ?? 0))
        if (sparing) {
          for (let i = 0; i < missing.length && sparing; i++) {
            const row = missing[i]!
            if (isGcRow(row)) sparing = false
            else if (row.part) missing[i] = this.sparedPart(row)
          }
        }
        for (const page of pageRows(missing, CATCH_UP_MESSAGE_BYTES)) {
          // Paced by what the socket takes: a device that does not read (or asks again and
          // again) would otherwise have the whole history queued in memory per request.
          if (conn.unsentBytes > CATCH_UP_UNSENT_BYTES) await conn.drained(CATCH_UP_UNSENT_BYTES)
          if (conn.isClosed) break
          // Already the whole room frame: sent as it is.
          conn.send(rowsMessage(page, header))
          // On the wire now, not after the last page: the device applies one while the next is built.
          conn.flush()
        }
      }
    } finally {
      if (--room.catchUpsReading === 0) for (const done of room.catchUpsDone.splice(0)) done()
    }
    if (!room.peers.has(conn)) return
    conn.deliver(room.id, writeCursor(upTo))
    if (room.receipts.size > 0) conn.deliver(room.id, writeReceipts([...room.receipts.values()]))
    await this.acknowledgeOwnRows(conn, room, upTo)
    if (!room.peers.has(conn)) return
    conn.deliver(room.id, EMPTY_SYNC_STEP2)
    conn.deliver(room.id, writeSyncMessage(SyncStep.Step1, encodeStateVector(room.stateVector())))
    // Spared to the end: it holds all it was sent, and live parts are spared too. Not: it may
    // wait for a snapshot, and gets live parts whole until it says want-parts 0.
    if (state.spareInCatchUp) state.spareParts = sparing
    const buffered = state.buffer
    state.buffer = []
    state.bufferedBytes = 0
    state.state = 'live'
    for (const b of buffered) if (b.seq > upTo) conn.deliver(room.id, b.message)
  }

  private storeFailed(room: Room, err: unknown): void {
    this.log.error('store append failed', { room: room.id, error: (err as Error).message })
    this.metrics.reject('store failed')
    // In-memory seqs and clocks ran ahead of the store: drop the room so it reloads from disk,
    // and make its clients resync (their unacknowledged updates are still in their outbox).
    this.rooms.delete(room.id)
    // Updates already queued on this room object were checked against the clocks it claimed:
    // none of them may be stored now (see commitUpdate).
    room.failed = true
    room.openRow = undefined
    for (const peer of room.peers.keys()) peer.close(CloseCode.TryAgain, 'relay storage failed; retry')
  }

  /** Store and bus reachable? For GET /readyz. */
  async readiness(): Promise<{ ok: boolean; store: boolean; bus: boolean }> {
    let store = true
    try {
      await this.store.loadRoom('readiness-probe-room')
    } catch {
      store = false
    }
    const bus = this.bus.ready()
    return { ok: store && bus && !this.closing, store, bus }
  }

  private closing = false

  async close(): Promise<void> {
    this.closing = true
    clearInterval(this.sweeper)
    await this.committer.idle()
  }
}


/**
 * Is (epoch, key check) the room's current key? Epoch 0 comes with the genesis and has no
 * record; every later one names its key by the check value in its epoch record, so an
 * envelope sealed under a key that lost a race for its epoch number is refused (and re-sealed).
 */
function isCurrentKey(room: Room, epoch: number, keyCheck: Uint8Array): boolean {
  if (epoch !== room.membership.epoch) return false
  if (epoch === 0) return true
  const expected = room.membership.epochs.get(epoch)?.keyCheck
  return expected !== undefined && constantTimeEqual(expected, keyCheck)
}

/** A row's clock range without the clocks that were refused (blanked) in it. */
const NOTHING_BLANKED: ReadonlySet<string> = new Set()

/**
 * An open row takes updates up to this many struct bytes. Reads page by row count (2,000 rows
 * a page), so this bounds what a page of merged rows holds (16 MiB); 8 KiB already merges ~20
 * envelopes of a pipelined sender, and ingest measured the same with 8, 16 and 64 KiB.
 */
const OPEN_ROW_MAX_BYTES = 8 * 1024

/** One row of envelopes only, nothing refused, no records, no membership change, no new client. */
function isPlainUpdate(v: ValidatedUpdate, records: Uint8Array[], devices: DeviceChange[]): boolean {
  // A part's row stays a row of its own: fan-out spares it whole or not at all.
  return v.part !== true && v.rows.length === 1 && v.refused.length === 0 && v.newClients.length === 0 && records.length === 0 && devices.length === 0 && v.records.length === 0
}


/** A refusal kept with its blank (RelayStore.refusalsIn). */
type StoredRefusal = { clock: number; len: number; reason: number }

function ackRanges(row: Pick<Row, 'client' | 'clock' | 'len'>, blanked: ReadonlySet<string>): Array<{ client: number; clock: number; len: number }> {
  if (blanked.size === 0) return [{ client: row.client, clock: row.clock, len: row.len }]
  const out: Array<{ client: number; clock: number; len: number }> = []
  let start = row.clock
  for (let c = row.clock; c <= row.clock + row.len; c++) {
    if (c === row.clock + row.len || blanked.has(`${row.client}:${c}`)) {
      if (c > start) out.push({ client: row.client, clock: start, len: c - start })
      start = c + 1
    }
  }
  return out
}

/** A row that is one GC struct (info byte 0 in Yjs V1): compacted history, or a refused write's blank. */
function isGcRow(row: Row): boolean {
  return row.count === 1 && row.structs[0] === 0
}

/** `0x23 • varUint(1) • varString("rec")`: how a row holding one record begins (PROTOCOL §5.2). */
const RECORD_STRUCT_HEAD = Uint8Array.of(0x23, 0x01, 0x03, 0x72, 0x65, 0x63)

/** A row of one record, by its first bytes (records have rows of their own): cheap enough for every row a node tails. */
function isRecordRow(row: Row): boolean {
  if (row.count !== 1 || row.structs.length < RECORD_STRUCT_HEAD.length) return false
  for (let i = 0; i < RECORD_STRUCT_HEAD.length; i++) if (row.structs[i] !== RECORD_STRUCT_HEAD[i]) return false
  return true
}

/** Does a stored row carry a signed record (an item of the `rec` map)? */
function rowHasRecords(row: Row): boolean {
  try {
    const parsed = parseUpdate(encodePage([row]), { maxBytes: Number.MAX_SAFE_INTEGER })
    for (const g of parsed.groups) for (const s of g.structs) if (s.kind === 'item' && s.parentRoot === OUTER_RECORDS) return true
    return false
  } catch {
    // Unreadable here means it cannot be reasoned about: keep it.
    return true
  }
}

/**
 * For a record in an upload: `'other'` unless it is a snapshot record; `'refuse'` for one the
 * relay must refuse before applying it: one that claims to cover rows that do not exist yet
 * (it would let compaction replace rows written after it), or one uploaded after envelopes of
 * its device were refused (`envelopesRefused`: its parts', in this update or earlier part
 * uploads; compacting for an incomplete snapshot would lose history for every device that
 * later needs it); else `'take'`. A record that does not parse is `'other'`: refused as any.
 */
function snapshotVerdict(bytes: Uint8Array, room: Room, envelopesRefused: number): 'other' | 'refuse' | 'take' {
  let rec: ReturnType<typeof readRecord>
  try {
    rec = readRecord(bytes)
  } catch {
    return 'other'
  }
  if (rec.kind !== RecordKind.Snapshot) return 'other'
  if (envelopesRefused > 0) return 'refuse'
  try {
    return readSnapshotBody(rec.body).coversSeq > room.committedSeq ? 'refuse' : 'take'
  } catch {
    return 'refuse'
  }
}
