import { afterEach, describe, expect, it, vi } from 'vitest'
import { decodeSentEnvelope } from '../../src/client/conversation-record.js'
import { OwnMessages, type Put } from '../../src/client/own-messages.js'
import { StaleReseal } from '../../src/client/stale-reseal.js'
import { generateSigningKeyPair, randomBytes } from '../../src/shared/crypto/index.js'
import { sealEnvelope } from '../../src/shared/envelope.js'
import { ErrorCode, type PetrelError } from '../../src/shared/errors.js'

afterEach(() => vi.useRealTimers())

const ROOM = 'room-1'
const device = generateSigningKeyPair()
const oldKey = randomBytes(32)
const heldKey = randomBytes(32)

const envelopeUnder = (key: Uint8Array) =>
  sealEnvelope({ room: ROOM, epoch: 1, key, senderDevicePub: device.publicKey, senderDeviceSecret: device.secretKey, update: Uint8Array.of(0, 0) })

/** A conversation's side of the re-seal: its outbox, its envelopes, and what it was asked to seal. */
function world(options: { key?: Uint8Array; openable?: (envelopeKey: string) => boolean } = {}) {
  const own = new OwnMessages(ROOM)
  const envelopes = new Map<string, Uint8Array>()
  const sealed: Array<{ update: Uint8Array; ids: string[] }> = []
  const stored: Put[][] = []
  const errors: PetrelError[] = []
  const changed: string[][] = []
  let key = options.key ?? heldKey
  const reseal = new StaleReseal({
    id: ROOM,
    closed: false,
    own,
    currentKey: () => key,
    rotationDue: false,
    envelope: (k) => envelopes.get(k),
    originalUpdate: (k) => ((options.openable ?? (() => true))(k) ? Uint8Array.from(k, (c) => c.charCodeAt(0)) : undefined),
    seal: async (update, ids) => void sealed.push({ update, ids }),
    saveRows: (puts) => void stored.push(puts),
    statusesChanged: (ids) => void changed.push(ids),
    reportError: (err) => void errors.push(err),
    report: (err) => {
      throw err
    },
  })
  /** Messages sealed together in envelope `k`, then refused as stale. */
  const refused = (k: string, ids: string[]) => {
    own.sealed([{ envelopeKey: k, msgIds: ids }], [])
    for (const id of ids) {
      own.get(id)!.stale = true
      reseal.add(id)
    }
  }
  return { reseal, own, envelopes, sealed, stored, errors, changed, refused, setKey: (k: Uint8Array | undefined) => (key = k!) }
}

describe('stale re-seal', () => {
  it('seals each refused envelope again once, with all of its messages, when the refused one was under an older key', async () => {
    const w = world()
    w.refused('e1', ['u.1', 'u.2'])
    w.refused('e2', ['u.3'])
    w.envelopes.set('e1', await envelopeUnder(oldKey))
    w.envelopes.set('e2', await envelopeUnder(oldKey))
    w.reseal.afterRefusal(['e1', 'e2'])
    expect(w.sealed.map((s) => s.ids)).toEqual([['u.1', 'u.2'], ['u.3']])
    expect(w.reseal.pending).toBe(false)
  })

  it('waits 50 ms, then double with each refusal more, when the refused envelope was under the key held', async () => {
    vi.useFakeTimers()
    const w = world()
    w.envelopes.set('e1', await envelopeUnder(heldKey))
    w.refused('e1', ['u.1'])
    w.reseal.afterRefusal(['e1'])
    expect(w.sealed).toEqual([])
    vi.advanceTimersByTime(50)
    expect(w.sealed).toHaveLength(1)
    w.refused('e1', ['u.1'])
    w.reseal.afterRefusal(['e1'])
    vi.advanceTimersByTime(99)
    expect(w.sealed).toHaveLength(1)
    vi.advanceTimersByTime(1)
    expect(w.sealed).toHaveLength(2)
  })

  it('seals at once when a new key comes, whatever the wait', async () => {
    vi.useFakeTimers()
    const w = world()
    w.envelopes.set('e1', await envelopeUnder(heldKey))
    w.refused('e1', ['u.1'])
    w.reseal.afterRefusal(['e1'])
    w.reseal.now()
    expect(w.sealed).toHaveLength(1)
  })

  it('waits while this device lacks the current key', () => {
    const w = world()
    w.setKey(undefined)
    w.refused('e1', ['u.1'])
    w.reseal.now()
    expect(w.sealed).toEqual([])
    expect(w.reseal.pending).toBe(true)
  })

  it('fails a message whose envelope no key here opens, stores that, and tells the app', () => {
    const w = world({ openable: (k) => k !== 'gone' })
    w.refused('gone', ['u.1', 'u.2'])
    w.refused('e2', ['u.3'])
    w.reseal.now()
    expect(w.sealed.map((s) => s.ids)).toEqual([['u.3']])
    expect(w.own.get('u.1')).toEqual(expect.objectContaining({ stale: false, failure: 'could not be sealed again: the key it was sealed under is gone' }))
    const row = w.stored[0]!.find(([, v]) => v !== null)!
    expect(decodeSentEnvelope(row[1]!)).toEqual(expect.objectContaining({ envelopeKey: 'gone', failure: expect.stringContaining('key it was sealed under is gone') }))
    expect(w.changed).toEqual([['u.1', 'u.2']])
    expect(w.errors.map((e) => e.code)).toEqual([ErrorCode.EnvelopeRejected])
  })
})
