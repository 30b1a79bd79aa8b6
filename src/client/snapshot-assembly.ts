/**
 * A received history snapshot, from its parts to the inner state to apply (PROTOCOL §11).
 *
 * Parts arrive as envelopes, one row each, a paced step apart; the last carries the snapshot's
 * record. Only the snapshot the relay compacted for is opened: the latest snapshot record's,
 * every part from one device of the member who signed that record, under one key. A
 * compressed one (snapshot-seal.ts, versions 2 and 4) is inflated at once where the platform can
 * (Node); elsewhere (a browser) asynchronously, and its state waits to be taken by the next
 * receive pass.
 *
 * What is refused (a part that does not open, a state that does not inflate) is reported
 * through `reject` with a typed code, and nothing of it is applied.
 */
import { toBase64Url } from '../shared/crypto/index.js'
import type { SnapshotPart } from '../shared/envelope.js'
import { ErrorCode } from '../shared/errors.js'
import type { MembershipState } from '../shared/membership.js'
import { inflateSnapshot, type OpenedSnapshot, historyKeys, openSnapshot, snapshotStateNow } from '../shared/snapshot-seal.js'

/** An inner state to apply: the snapshot's, what it covers, and the row of its last part. */
export interface SnapshotState {
  state: Uint8Array
  coversSeq: number
  seq: number
}

/**
 * Devices whose snapshots are gathered at once, at most. Each device has one snapshot gathering
 * and one complete at a time (a writer writes one at a time; a newer one replaces its older):
 * until the thirty-sixth session four unfinished sets from one member, sent before an honest
 * snapshot's parts, took every place for good, and a fresh device never got the history.
 */
const MAX_SENDERS = 64

interface Gathering {
  parts: Array<Uint8Array | undefined>
  got: number
  coversSeq: number
  sender: string
  epoch: number
}

interface Complete {
  id: string
  sealed: Uint8Array
  epoch: number
  sender: string
  seq: number
}

export class SnapshotAssembly {
  private readonly gathering = new Map<string, Gathering>()
  /** The id each sending device is gathering. */
  private readonly gatheringBy = new Map<string, string>()
  /** Per sending device, its last snapshot whose parts are all here, sealed, waiting for its record. */
  private readonly complete = new Map<string, Complete>()
  private inflated: SnapshotState | undefined
  /** A compressed snapshot being inflated (browsers): settles once its state waits to be taken. */
  inflating: Promise<void> | undefined

  /**
   * @param room the conversation's id
   * @param reject told what was refused, and why
   * @param inflated called once an asynchronous inflate settled (the receive pass that takes it is the caller's to queue)
   *
   * @example
   * ```ts
   * const assembly = new SnapshotAssembly(room, (code, why) => report(code, why), () => retryHeld())
   * assembly.add(part, epoch, senderDeviceId, seq)                 // each part received
   * const s = assembly.take(membership, keys, () => false)         // after the record folded
   * if (s) Y.applyUpdate(doc, s.state)
   * ```
   */
  constructor(
    private readonly room: string,
    private readonly reject: (code: ErrorCode, message: string) => void,
    private readonly onInflated: () => void,
  ) {}

  /** Collect one part (from device `sender`, sealed under `epoch`, received in row `seq`). */
  add(part: SnapshotPart & { bytes: Uint8Array }, epoch: number, sender: string, seq: number): void {
    const id = toBase64Url(part.snapshotId)
    let entry = this.gathering.get(id)
    if (!entry) {
      const older = this.gatheringBy.get(sender)
      if (older !== undefined) this.gathering.delete(older)
      else if (this.gatheringBy.size >= MAX_SENDERS) return
      entry = { parts: new Array(part.parts).fill(undefined), got: 0, coversSeq: part.coversSeq, sender, epoch }
      this.gathering.set(id, entry)
      this.gatheringBy.set(sender, id)
    }
    // Every part from one device, under one key: a snapshot is one author's copy.
    if (entry.parts.length !== part.parts || entry.coversSeq !== part.coversSeq || entry.sender !== sender || entry.epoch !== epoch || entry.parts[part.part]) return
    entry.parts[part.part] = part.bytes
    entry.got++
    if (entry.got < entry.parts.length) return
    this.gathering.delete(id)
    this.gatheringBy.delete(sender)
    const total = entry.parts.reduce((n, p) => n + p!.length, 0)
    const sealed = new Uint8Array(total)
    let at = 0
    for (const p of entry.parts) {
      sealed.set(p!, at)
      at += p!.length
    }
    if (this.complete.size >= MAX_SENDERS && !this.complete.has(sender)) return
    this.complete.set(sender, { id, sealed, epoch, sender, seq })
  }

  /**
   * The state to apply now, if there is one: an inflated one that waited, or the complete
   * snapshot if the latest record is its own and was signed by the member whose device sent it.
   * `keys`: this device's keys by epoch (the first epoch's is needed too: a 'from-join' member
   * cannot open a snapshot, by design). `keysToCome`: a key it lacks is on its way (an admin's
   * welcome): a snapshot it cannot open yet is kept for then, else dropped.
   */
  take(membership: MembershipState, keys: ReadonlyMap<number, Uint8Array>, keysToCome: () => boolean = () => false): SnapshotState | undefined {
    const inflated = this.inflated
    if (inflated) {
      this.inflated = undefined
      return inflated
    }
    const latest = membership.snapshot
    if (!latest) return undefined
    const latestId = toBase64Url(latest.snapshotId)
    let ready: Complete | undefined
    for (const c of this.complete.values()) if (c.id === latestId) ready = c
    if (!ready) return undefined
    if (membership.everDevices.get(ready.sender) !== latest.by) {
      this.complete.delete(ready.sender)
      return undefined
    }
    // Only a device holding every key up to its epoch reads a snapshot, whatever its version.
    // Kept while a key it lacks is to come (dropped, the key found nothing left to open); a
    // 'from-join' member's device, which never gets the keys, holds no sealed copy for nothing.
    const history = historyKeys(keys, ready.epoch)
    if (!history) {
      if (!keysToCome()) this.complete.delete(ready.sender)
      return undefined
    }
    this.complete.delete(ready.sender)
    let opened: OpenedSnapshot
    try {
      opened = openSnapshot(ready.sealed, this.room, ready.epoch, history)
    } catch (err) {
      this.reject(ErrorCode.EnvelopeRejected, `history snapshot refused: ${(err as Error).message}`)
      return undefined
    }
    let now: Uint8Array | undefined
    try {
      now = snapshotStateNow(opened)
    } catch (err) {
      this.reject(ErrorCode.Malformed, `history snapshot refused: ${(err as Error).message}`)
      return undefined
    }
    const { coversSeq } = latest
    if (now) return { state: now, coversSeq, seq: ready.seq }
    // Compressed, and this platform inflates only asynchronously (a browser).
    const inflating = inflateSnapshot(opened).then(
      (state) => {
        // Two may inflate at once (a newer one completed meanwhile): the one covering more wins.
        if (!this.inflated || this.inflated.coversSeq <= coversSeq) this.inflated = { state, coversSeq, seq: ready.seq }
      },
      (err) => this.reject(ErrorCode.Malformed, `history snapshot refused: ${(err as Error).message}`),
    )
    const settled: Promise<void> = inflating.finally(() => {
      if (this.inflating === settled) this.inflating = undefined
      this.onInflated()
    })
    this.inflating = settled
    return undefined
  }
}
