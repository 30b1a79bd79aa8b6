import { describe, expect, it } from 'vitest'
import type { ClientContext } from '../../src/client/client-context.js'
import { GapFills } from '../../src/client/gap-fills.js'
import * as Y from 'yjs'
import type { MembershipBook } from '../../src/client/membership-book.js'
import type { Put } from '../../src/client/own-messages.js'
import { sealedOuter, sealedOutbox, writeAs } from '../fixtures/sealed-outbox.js'
import { applyRefusal, type RefusalsHost } from '../../src/client/relay-refusals.js'
import type { StaleReseal } from '../../src/client/stale-reseal.js'
import type { SessionWriterIds } from '../../src/client/writer-ids.js'
import { ErrorCode, type PetrelError } from '../../src/shared/errors.js'
import type { MembershipState } from '../../src/shared/membership.js'
import { envelopeKey, OUTER_RECORDS } from '../../src/shared/outer-keys.js'
import { certificatePayload, encodeCertificate, encodeEpochBody, encodeRecord, RecordKind } from '../../src/shared/records.js'
import { randomBytes } from '../../src/shared/crypto/index.js'
import { Reason } from '../../src/shared/wire.js'

const ROOM = 'room-1'

/**
 * A conversation's side of a refusal: this device's messages `m1`, `m2` sealed in envelope
 * (client 7, clock 0) and `m3` in (7, 1); what the refusal asks of the rest, recorded.
 */
function setup() {
  const outer = sealedOuter()
  const own = sealedOutbox(ROOM)
  const calls: string[] = []
  const commits: Put[][] = []
  const errors: PetrelError[] = []
  const tombstones: Array<{ update: Uint8Array; puts?: Put[] }> = []
  const resealing: string[] = []
  let chain: Promise<void> = Promise.resolve()
  const state = { epoch: 1 }
  const refusedRecords: string[] = []
  const fillsSent: Uint8Array[] = []
  const fills = new GapFills({
    closed: false,
    sealForOthers: async (update) => {
      fillsSent.push(update)
    },
    saveFills: () => {},
    report: (err) => {
      throw err
    },
  })
  // (7, 2) holds no message: an app change, whose inner update is this.
  const appDoc = new Y.Doc()
  appDoc.getMap('app').set('colour', 'teal')
  const appChange = Y.encodeStateAsUpdate(appDoc)
  const host: RefusalsHost = {
    id: ROOM,
    ctx: { reportError: (err: PetrelError) => errors.push(err) } as unknown as ClientContext,
    outer,
    book: {
      refuse: (key: string) => refusedRecords.push(key),
      encodeSeqs: () => Uint8Array.of(9),
    } as unknown as MembershipBook,
    get membership() {
      return state as MembershipState
    },
    own,
    reseal: {
      add: (id: string) => resealing.push(id),
      afterRefusal: (keys: Set<string>) => calls.push(`reseal after ${[...keys].join(',')}`),
      now: () => calls.push('reseal now'),
      get pending() {
        return resealing.length > 0
      },
    } as unknown as StaleReseal,
    writerIds: { refused: () => calls.push('ids refused') } as unknown as SessionWriterIds,
    closed: false,
    afterIncoming: (job) => {
      chain = chain.then(job).then(() => undefined)
    },
    commit: async (batch) => {
      commits.push(batch.put ?? [])
    },
    landing: (commit) => {
      void commit
    },
    foldRecords: async () => {
      calls.push('fold')
    },
    rotateOnce: async () => {
      calls.push('rotate')
    },
    addDevices: async () => {
      calls.push('add again')
    },
    readded: new Set<string>(),
    originalUpdate: (key) => (key === envelopeKey(7, 0) ? Uint8Array.of(0, 0) : key === envelopeKey(7, 2) ? appChange : undefined),
    fills,
    sealForOthers: async (update, puts) => {
      tombstones.push({ update, puts })
    },
    statusesChanged: (ids) => calls.push(`statuses ${[...(ids ?? [])].join(',')}`),
    report: (err) => {
      throw err
    },
  }
  return { host, own, outer, calls, commits, errors, tombstones, resealing, refusedRecords, state, fills, fillsSent, appChange, settled: () => chain }
}

const range = (client: number, clock: number, len = 1) => ({ client, clock, len })

describe('relay refusals', () => {
  it('sends messages refused as stale again under the new key, storing the refusal first, and tells the app nothing', async () => {
    const r = setup()
    applyRefusal(r.host, { reason: Reason.StaleEpoch, message: 'epoch 0 ended', ranges: [range(7, 0)] })
    expect(r.resealing).toEqual(['m1', 'm2'])
    expect(r.own.get('m1')?.stale).toBe(true)
    expect(r.own.get('m3')?.stale).toBeUndefined()
    // The rows marking them stale were issued before the re-seal's, which replaces them.
    expect(r.commits).toHaveLength(1)
    expect(r.commits[0]!.map(([k]) => k)).toHaveLength(1)
    expect(r.calls).toContain(`reseal after ${envelopeKey(7, 0)}`)
    expect(r.errors).toEqual([])
    expect(r.tombstones).toEqual([])
  })

  it('fails messages refused for good with the reason, tells the app, and fills the gap at receivers with a tombstone carrying the failure rows', async () => {
    const r = setup()
    applyRefusal(r.host, { reason: Reason.Forbidden, message: 'not yours', ranges: [range(7, 0, 2)] })
    for (const id of ['m1', 'm2', 'm3']) expect(r.own.get(id)).toMatchObject({ refused: true, failure: expect.stringMatching(/not yours/) })
    expect(r.errors.map((e) => e.code)).toEqual([ErrorCode.Refused])
    expect(r.calls).toContain('statuses m1,m2,m3')
    // One tombstone per envelope whose update this device can still open; the rows ride with the first.
    expect(r.tombstones).toHaveLength(1)
    expect(r.tombstones[0]!.puts!.length).toBe(2)
    await r.settled()
    expect(r.commits).toEqual([])
  })

  it('stores the failure rows by themselves when no tombstone can be made', async () => {
    const r = setup()
    applyRefusal(r.host, { reason: Reason.Forbidden, message: 'not yours', ranges: [range(7, 1)] })
    expect(r.tombstones).toEqual([])
    await r.settled()
    expect(r.commits).toHaveLength(1)
  })

  it('says nothing to the app of a gap, which the relay asks to have resent', () => {
    const r = setup()
    applyRefusal(r.host, { reason: Reason.Gap, message: 'missing 3', ranges: [range(9, 0)] })
    expect(r.errors).toEqual([])
  })

  it('undoes a refused record of ours and starts its epoch again if nobody else took the number (and not if someone did)', async () => {
    const r = setup()
    const key = envelopeKey(3, 0)
    // Only its kind and epoch are read here: a certificate that parses (its signatures were checked when it came).
    const body = encodeEpochBody({ room: ROOM, epoch: 2, at: 0, keyCheck: new Uint8Array(8), wrapped: [] })
    const cert = encodeCertificate(certificatePayload(randomBytes(32), randomBytes(32), randomBytes(32), 0), randomBytes(64))
    expect(writeAs(r.outer, 3, OUTER_RECORDS, encodeRecord(RecordKind.Epoch, body, cert, randomBytes(64)))).toBe(key)
    applyRefusal(r.host, { reason: Reason.StaleEpoch, message: 'epoch 2 taken', ranges: [range(3, 0)] })
    expect(r.refusedRecords).toEqual([key])
    await r.settled()
    expect(r.commits[0]).toEqual([['rseq:room-1', Uint8Array.of(9)]])
    expect(r.calls.filter((c) => c === 'fold' || c === 'rotate')).toEqual(['fold', 'rotate'])
    // Epoch 2 taken by someone else's record meanwhile: folded, and nothing started again.
    const taken = setup()
    taken.state.epoch = 2
    writeAs(taken.outer, 3, OUTER_RECORDS, r.outer.getMap<Uint8Array>(OUTER_RECORDS).get(key)!)
    applyRefusal(taken.host, { reason: Reason.StaleEpoch, message: 'epoch 2 taken', ranges: [range(3, 0)] })
    await taken.settled()
    expect(taken.calls.filter((c) => c === 'fold' || c === 'rotate')).toEqual(['fold'])
  })

  it('does not start an epoch again that a full conversation refused: it would only be refused again', async () => {
    const r = setup()
    const body = encodeEpochBody({ room: ROOM, epoch: 2, at: 0, keyCheck: new Uint8Array(8), wrapped: [] })
    const cert = encodeCertificate(certificatePayload(randomBytes(32), randomBytes(32), randomBytes(32), 0), randomBytes(64))
    const key = writeAs(r.outer, 3, OUTER_RECORDS, encodeRecord(RecordKind.Epoch, body, cert, randomBytes(64)))
    applyRefusal(r.host, { reason: Reason.QuotaExceeded, message: 'conversation full', ranges: [range(3, 0)] })
    expect(r.refusedRecords).toEqual([key])
    await r.settled()
    expect(r.calls.filter((c) => c === 'fold' || c === 'rotate')).toEqual(['fold'])
    expect(r.errors.map((e) => e.code)).toEqual([ErrorCode.Refused])
  })

  it('fails a message once: the same refusal again (a full relay refusing its resend) sends no second tombstone', () => {
    const r = setup()
    applyRefusal(r.host, { reason: Reason.QuotaExceeded, message: 'conversation full', ranges: [range(7, 0)] })
    applyRefusal(r.host, { reason: Reason.QuotaExceeded, message: 'conversation full', ranges: [range(7, 0)] })
    expect(r.tombstones).toHaveLength(1)
    expect(r.calls.filter((c) => c.startsWith('statuses'))).toEqual(['statuses m1,m2'])
  })

  it('sends a refused change that holds no message again once there is room: as it was, or as a tombstone when it could never go', async () => {
    const r = setup()
    // Refused for quota with nothing stored: the sync sends it again by itself.
    applyRefusal(r.host, { reason: Reason.QuotaExceeded, message: 'conversation full', ranges: [range(7, 2)] })
    expect(r.fills.size).toBe(0)
    // Too large: as a tombstone; the same refusal again queues it once.
    applyRefusal(r.host, { reason: Reason.TooLarge, message: 'too large', ranges: [range(7, 2)] })
    applyRefusal(r.host, { reason: Reason.TooLarge, message: 'too large', ranges: [range(7, 2)] })
    expect(r.fills.size).toBe(1)
    expect(r.fillsSent).toEqual([])
    // The relay stored a row of ours: it goes.
    r.fills.roomAgain(12)
    await Promise.resolve()
    expect(r.fillsSent).toHaveLength(1)
    const doc = new Y.Doc()
    Y.applyUpdate(doc, r.fillsSent[0]!)
    expect(doc.getMap('app').size).toBe(0)
    expect(doc.store.pendingStructs).toBeNull()
    // Refused as stale, or for quota with a blank in its place: the change itself goes again.
    for (const reason of [Reason.StaleEpoch, Reason.QuotaExceededForGood]) {
      const sent = r.fillsSent.length
      applyRefusal(r.host, { reason, message: 'again', ranges: [range(7, 2)] })
      r.fills.roomAgain(13 + sent)
      await Promise.resolve()
      expect(r.fillsSent[sent]).toEqual(r.appChange)
    }
    r.fills.close()
  })

  it('has the writer ids draw again when the relay says our outer id is another device’s', () => {
    const r = setup()
    applyRefusal(r.host, { reason: Reason.ClientIdTaken, message: 'taken', ranges: [range(7, 0)] })
    expect(r.calls[0]).toBe('ids refused')
  })
  it('reads a range only as far as this device wrote: a hostile length of 2^53 - 1 fails what it holds, at once', () => {
    const r = setup()
    const t0 = performance.now()
    applyRefusal(r.host, { reason: Reason.Forbidden, message: 'not yours', ranges: [range(7, 1, Number.MAX_SAFE_INTEGER), range(3, 0, Number.MAX_SAFE_INTEGER)] })
    // A key string per clock: 2,000,000 took 1.1 s; this length would have run out of memory.
    expect(performance.now() - t0).toBeLessThan(1_000)
    expect(r.own.get('m3')).toMatchObject({ refused: true })
    expect(r.own.get('m1')?.refused).toBeUndefined()
  })
})
