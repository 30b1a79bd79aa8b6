/**
 * What the relay refusing some of this device's writes means for the conversation (PROTOCOL
 * §5, `refused`): the refused ranges name outer items, and each may be
 *
 * - one of our **records** (adding a device, starting an epoch): it stops counting here too, so
 *   what it meant to do is seen as not done and can be done again; an epoch of ours refused
 *   for good is started again for the members as they are now;
 * - one of our **envelopes** refused as **stale** (sealed before this device knew of a new
 *   key): not a failure, its messages go again under the new key (stale-reseal.ts);
 * - one refused **for good** (any other reason): its messages fail, and a tombstone fills the
 *   gap at receivers so this device's later messages still flow;
 * - one of our envelopes that holds **no message** (a tombstone, a profile or app change): it
 *   goes again to fill its gap, as it was or as a tombstone (gap-fills.ts).
 *
 * A refusal because our outer id is bound to another device makes the writer ids draw again
 * (writer-ids.ts). Gaps and stale epochs are routine; any other reason is reported to the app.
 */
import type * as Y from 'yjs'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { type DeviceCertificate, readAddBody, readEpochBody, readRecord, RecordKind } from '../shared/records.js'
import { toBase64Url } from '../shared/crypto/index.js'
import type { MembershipState } from '../shared/membership.js'
import { OUTER_LOG, OUTER_RECORDS } from '../shared/outer-keys.js'
import { Reason, reasonName } from '../shared/wire.js'
import type { ClientContext } from './client-context.js'
import { keyOf } from './conversation-record.js'
import type { GapFills } from './gap-fills.js'
import type { MembershipBook } from './membership-book.js'
import type { OwnMessages, Put } from './own-messages.js'
import { heldRangeKeys } from './range-keys.js'
import type { StaleReseal } from './stale-reseal.js'
import type { Batch, CommitOptions } from './storage/device-store.js'
import { tombstoneUpdate } from './tombstone.js'
import type { SessionWriterIds } from './writer-ids.js'

/** A `refused` message: why, and the outer items (client, first clock, count) it names. */
export interface Refusal {
  reason: number
  message: string
  ranges: ReadonlyArray<{ client: number; clock: number; len: number }>
}

/** What a refusal reads and changes of its conversation. */
export interface RefusalsHost {
  readonly id: string
  readonly ctx: ClientContext
  readonly outer: Y.Doc
  readonly book: MembershipBook
  readonly membership: MembershipState
  readonly own: OwnMessages
  readonly reseal: StaleReseal
  readonly fills: GapFills
  readonly writerIds: SessionWriterIds
  readonly closed: boolean
  /** Queue `job` on the receive chain; its failure is reported with `failure`. */
  afterIncoming(job: () => unknown, failure: string): void
  commit(batch: Batch, options?: CommitOptions): Promise<void>
  /** A commit the receive chain need not wait for (its failure reported with `failure`). */
  landing(commit: Promise<void>, failure: string): void
  foldRecords(): Promise<void>
  /** Start a new epoch, unless this device is starting one already. */
  rotateOnce(): Promise<void>
  /** Add these devices of a person again (member-actions.ts addDevices), as an admin would. */
  addDevices(userPub: Uint8Array, certs: DeviceCertificate[], history: 'full' | 'from-join'): Promise<void>
  /** Device ids whose refused add this session added again once already (never twice: a loop at the relay's speed). */
  readonly readded: Set<string>
  /** The inner update an envelope of ours carried, to tombstone it. */
  originalUpdate(envelopeKey: string): Uint8Array | undefined
  /** Seal an update for the other devices only; `puts` ride in its commit. */
  sealForOthers(update: Uint8Array, puts?: Put[]): Promise<void>
  statusesChanged(ids?: Iterable<string>): void
  report(err: unknown, context: string): void
}

/**
 * Act on one `refused` message.
 *
 * @example
 * ```ts
 * provider.messageHandlers[RoomMessage.Refused] = (r) => applyRefusal(host, readRefused(r))
 * ```
 */
export function applyRefusal(host: RefusalsHost, msg: Refusal): void {
  const onlyEpochs = refuseRecords(host, msg)
  // Our outer id is bound to another device at the relay: a reload drew another; so must the next session.
  if (msg.reason === Reason.ClientIdTaken) host.writerIds.refused()
  const keys = heldRangeKeys(host.outer, msg.ranges)
  // Stale is not a failure: sealed before we knew of a new key, it goes again under the new one.
  const isStale = msg.reason === Reason.StaleEpoch
  fillGaps(host, keys, msg.reason)
  host.fills.refusalHandled()
  const { ids, envelopes } = host.own.refused(keys, isStale, `${reasonName(msg.reason)}: ${msg.message}`)
  const stale = isStale ? envelopes : new Set<string>()
  const tombstones = isStale ? new Set<string>() : envelopes
  const failed = isStale ? [] : ids
  const puts: Put[] = []
  if (isStale) for (const id of ids) host.reseal.add(id)
  for (const key of tombstones) host.own.rowPuts(key, puts)
  if (stale.size > 0) {
    // Issued now, before the re-seal's commit (commits land in order), which replaces these rows.
    const marks: Put[] = []
    for (const key of stale) host.own.rowPuts(key, marks)
    host.landing(host.commit({ put: marks }), 'could not store a stale refusal')
  }
  // A gap is transient (a live update overtook the sync that carries its predecessors): the
  // relay asks for a resend itself. Anything else is worth telling the app.
  if (stale.size > 0) host.reseal.afterRefusal(stale)
  else if (host.reseal.pending) host.reseal.now()
  // An epoch record of ours refused as not valid here is housekeeping, not the app's to hear
  // of: it lost a race for its number (two admins changing the key after someone left), or a
  // join overtook it; either way the key changes all the same (refuseRecords starts it again
  // where needed). Refused for a full conversation it is the app's: the key stays.
  const housekeeping = onlyEpochs && msg.reason === Reason.Forbidden
  if (msg.reason !== Reason.Gap && msg.reason !== Reason.StaleEpoch && !housekeeping) {
    host.ctx.reportError(new PetrelError(ErrorCode.Refused, `relay refused: ${reasonName(msg.reason)}: ${msg.message}`, { conversationId: host.id }))
  }
  if (puts.length > 0) host.statusesChanged(failed)
  // Refused for good: fill the gap at receivers so this device's later messages still flow.
  // The failure rows are stored with the first tombstone: a crash between the two would
  // leave the message pending for good (the relay never refuses that range again).
  let rowsQueued = false
  for (const key of tombstones) {
    const update = host.originalUpdate(key)
    if (!update) continue
    const withRows = rowsQueued ? undefined : puts
    rowsQueued = true
    void host.sealForOthers(tombstoneUpdate(update), withRows).catch((err) => host.report(err, 'could not send a tombstone'))
  }
  if (puts.length === 0 || rowsQueued) return
  host.afterIncoming(() => host.commit({ put: puts }), 'could not store a refusal')
}

/**
 * Our refused envelopes that hold no message go again, to fill their gaps (gap-fills.ts): as
 * they were when stale, or refused for quota with a blank in their place (the author's document
 * holds the change, and the others then get it too, once there is room); as a tombstone when
 * refused for anything else (too large: it would never go). Refused for quota with nothing
 * stored, the sync sends it again by itself.
 */
function fillGaps(host: RefusalsHost, keys: Iterable<string>, reason: number): void {
  if (reason === Reason.QuotaExceeded || reason === Reason.Gap || reason === Reason.ClientIdTaken) return
  const asIs = reason === Reason.StaleEpoch || reason === Reason.QuotaExceededForGood
  const log = host.outer.getMap<Uint8Array>(OUTER_LOG)
  for (const key of keys) {
    if (host.own.holds(key) || !(log.get(key) instanceof Uint8Array)) continue
    let update: Uint8Array | undefined
    try {
      update = host.originalUpdate(key)
    } catch {
      // A snapshot part: the snapshot is written again, on its own schedule.
      continue
    }
    if (update) host.fills.refused(update, asIs)
  }
}

/**
 * Our own records the relay refused stop counting here too, so what they meant to do (add a
 * device, start an epoch) is seen as not done and can be done again. Returns whether what was
 * refused is epoch records of ours alone.
 */
function refuseRecords(host: RefusalsHost, msg: Refusal): boolean {
  // A conversation past even its records' allowance refuses every record: starting the epoch
  // again would only be refused again, as fast as the relay answers.
  const retry = msg.reason !== Reason.QuotaExceeded && msg.reason !== Reason.QuotaExceededForGood
  const recordMap = host.outer.getMap<Uint8Array>(OUTER_RECORDS)
  let refusedRecords = false
  // Every range refused is an epoch record of ours, or an add done again (and there is at least one).
  let onlyEpochs = msg.ranges.length > 0
  // The highest epoch one of our refused records meant to start (0: none), and every such epoch.
  let refusedEpoch = 0
  const refusedEpochs = new Set<number>()
  const adds: Array<{ userPub: Uint8Array; epoch: number; certs: DeviceCertificate[] }> = []
  for (const key of heldRangeKeys(host.outer, msg.ranges)) {
    const bytes = recordMap.get(key)
    if (bytes instanceof Uint8Array) {
      host.book.refuse(key)
      refusedRecords = true
      const epoch = epochStartedBy(bytes)
      const add = retry && msg.reason === Reason.Forbidden ? addIn(bytes) : undefined
      if (add && !add.certs.some((c) => host.readded.has(toBase64Url(c.devicePub)))) adds.push(add)
      else if (epoch === 0) onlyEpochs = false
      if (epoch > 0) refusedEpochs.add(epoch)
      refusedEpoch = Math.max(refusedEpoch, epoch)
    } else onlyEpochs = false
  }
  if (!refusedRecords) return false
  host.afterIncoming(async () => {
    await host.commit({ put: [[keyOf.recordSeqs(host.id), host.book.encodeSeqs()]] })
    await host.foldRecords()
    // Our new epoch was refused (a device joined through a 'from-join' invite before its
    // record arrived, so it left that device without the key) and nobody else's took its
    // number: start it again for the members as they are now. Messages refused under it
    // wait for it (stale-reseal.ts); without it they went out under the old key, which the
    // new member cannot read, or waited for good.
    if (retry && refusedEpoch > host.membership.epoch && !host.closed) await host.rotateOnce()
    // An add of ours refused as not valid here: made on this device while it did not know of a
    // key change another admin device made (offline, say). addMember had resolved and nobody
    // was added. Done again now, under the membership as it is, once; if this device is still
    // an admin and the devices are still out.
    for (const add of adds) {
      if (host.closed || !host.book.isAdmin()) break
      const out = add.certs.filter((c) => !host.membership.devices.has(toBase64Url(c.devicePub)))
      if (out.length === 0) continue
      for (const c of out) host.readded.add(toBase64Url(c.devicePub))
      await host.addDevices(add.userPub, out, refusedEpochs.has(add.epoch) ? 'from-join' : 'full')
    }
  }, 'could not store a refused record')
  return onlyEpochs
}

/** The person and devices an add record names, or undefined for any other record or bytes that do not parse. */
function addIn(bytes: Uint8Array): { userPub: Uint8Array; epoch: number; certs: DeviceCertificate[] } | undefined {
  try {
    const rec = readRecord(bytes)
    if (rec.kind !== RecordKind.Add) return undefined
    const body = readAddBody(rec.body)
    return { userPub: body.userPub, epoch: body.epoch, certs: body.devices.map((d) => d.certificate) }
  } catch {
    return undefined
  }
}

/** The epoch a record starts (an epoch record's number), or 0 for any other record or bytes that do not parse. */
function epochStartedBy(bytes: Uint8Array): number {
  try {
    const rec = readRecord(bytes)
    return rec.kind === RecordKind.Epoch ? readEpochBody(rec.body).epoch : 0
  } catch {
    return 0
  }
}
