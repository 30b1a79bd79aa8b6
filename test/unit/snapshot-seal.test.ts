import { deflateRawSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import { hkdf, randomBytes, randomNonce, seal } from '../../src/shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../../src/shared/errors.js'
import { deflateState, inflateState, inflateStateSync, MAX_SNAPSHOT_STATE_BYTES, type Via } from '../../src/shared/snapshot-deflate.js'
import { historyKeys, inflateSnapshot, openSnapshot, sealSnapshot } from '../../src/shared/snapshot-seal.js'

/** The keys of epochs 0 to 3, as a device holding the whole history holds them. */
const keys = [randomBytes(32), randomBytes(32), randomBytes(32), randomBytes(32)]
const upTo = (epoch: number) => keys.slice(0, epoch + 1)

/** An inner state of `n` messages shaped like the client's (the same ids in every one). */
function stateOf(n: number): Uint8Array {
  const doc = new Y.Doc()
  const messages = doc.getMap<Record<string, unknown>>('messages')
  const user = 'fDpXbO43dSP-KVnhCA94uTDZhaHdpbTgO1Cq1DoZJh4'
  doc.transact(() => {
    for (let i = 0; i < n; i++) messages.set(`${user}.${i}`, { t: `message ${i}`, at: 1_795_995_369_333 + i, h: i, n: i, d: 'gl7YNe8dSFT0U6NQAZp5ZfJIn82YZgEiGihwkjz1hsk', b: 'VIfRELAFhmkm', i: i % 30 })
  })
  return Y.encodeStateAsUpdate(doc)
}

async function rejection(p: Promise<unknown>): Promise<PetrelError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(PetrelError)
  return err as PetrelError
}

/**
 * A snapshot as devices sealed it before the thirty-eighth session (versions 1 and 2): under
 * the epoch's key and the first epoch's alone, built here from the documented layout.
 */
async function legacySeal(state: Uint8Array, room: string, epoch: number, version: 1 | 2): Promise<Uint8Array> {
  const context = encoding.createEncoder()
  encoding.writeVarString(context, 'petrel/v1/snapshot')
  encoding.writeVarString(context, room)
  encoding.writeVarUint(context, epoch)
  const ctx = encoding.toUint8Array(context)
  const ikm = new Uint8Array(64)
  ikm.set(keys[epoch]!)
  ikm.set(keys[0]!, 32)
  let plain = state
  if (version === 2) {
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, state.length)
    encoding.writeUint8Array(e, await deflateState(state))
    plain = encoding.toUint8Array(e)
  }
  const aad = version === 1 ? ctx : Uint8Array.of(...ctx, 2)
  const nonce = randomNonce()
  const out = encoding.createEncoder()
  encoding.writeUint8(out, version)
  encoding.writeVarUint8Array(out, nonce)
  encoding.writeVarUint8Array(out, seal(hkdf(ikm, undefined, ctx, 32), nonce, plain, aad))
  return encoding.toUint8Array(out)
}

describe('snapshot seal', () => {
  it('seals compressed (version 4) and opens to the same state, several times smaller than uncompressed (version 3)', async () => {
    const state = stateOf(2000)
    const sealed = await sealSnapshot(state, 'room', 3, upTo(3))
    expect(sealed[0]).toBe(4)
    const plain = await sealSnapshot(state, 'room', 3, upTo(3), undefined, false)
    expect(plain[0]).toBe(3)
    expect(sealed.length * 4).toBeLessThan(plain.length)
    expect(await inflateSnapshot(openSnapshot(sealed, 'room', 3, upTo(3)))).toEqual(state)
    expect(openSnapshot(plain, 'room', 3, upTo(3))).toEqual({ state })
  })

  it('opens only with every key of the history: not with the first and the current alone (a member let back in after a removal)', async () => {
    const sealed = await sealSnapshot(stateOf(10), 'room', 3, upTo(3))
    // Bob was out during epoch 2: he holds 0, 1 and 3. Whatever he puts in 2's place fails.
    const held = new Map([
      [0, keys[0]!],
      [1, keys[1]!],
      [3, keys[3]!],
    ])
    expect(historyKeys(held, 3)).toBeUndefined()
    expect(historyKeys(new Map(keys.map((k, i) => [i, k])), 3)).toEqual(keys)
    for (const guess of [keys[3]!, keys[0]!, randomBytes(32)]) {
      expect(() => openSnapshot(sealed, 'room', 3, [keys[0]!, keys[1]!, guess, keys[3]!])).toThrow(expect.objectContaining({ code: ErrorCode.EnvelopeRejected }))
    }
    // Keys for another epoch count are a caller's mistake, said as such.
    expect(() => openSnapshot(sealed, 'room', 3, upTo(2))).toThrow(expect.objectContaining({ code: ErrorCode.InvalidArgument }))
  })

  it('seals a state deflated elsewhere (the history replica’s thread) as version 4, even where asked not to compress', async () => {
    const state = stateOf(2000)
    const deflated = new Uint8Array(deflateRawSync(state, { level: 1 }))
    for (const compress of [true, false]) {
      const sealed = await sealSnapshot({ deflated, length: state.length }, 'room', 3, upTo(3), undefined, compress)
      expect(sealed[0]).toBe(4)
      expect(await inflateSnapshot(openSnapshot(sealed, 'room', 3, upTo(3)))).toEqual(state)
    }
    // A wrong length travels sealed and is caught when the snapshot is inflated, never past it.
    const lying = await sealSnapshot({ deflated, length: state.length - 1 }, 'room', 3, upTo(3))
    expect((await rejection(inflateSnapshot(openSnapshot(lying, 'room', 3, upTo(3))))).code).toBe(ErrorCode.Malformed)
  })

  it('still opens versions 1 and 2 (the first and current keys), as written before the thirty-eighth session', async () => {
    const state = stateOf(10)
    expect(openSnapshot(await legacySeal(state, 'room', 2, 1), 'room', 2, upTo(2))).toEqual({ state })
    expect(await inflateSnapshot(openSnapshot(await legacySeal(state, 'room', 2, 2), 'room', 2, upTo(2)))).toEqual(state)
  })

  it('refuses a version byte changed to any other (it is authenticated) and an unknown version', async () => {
    const state = stateOf(10)
    for (const compress of [true, false]) {
      for (const other of [1, 2, 3, 4]) {
        const sealed = await sealSnapshot(state, 'room', 0, upTo(0), undefined, compress)
        if (sealed[0] === other) continue
        sealed[0] = other
        expect(() => openSnapshot(sealed, 'room', 0, upTo(0))).toThrow(expect.objectContaining({ code: ErrorCode.EnvelopeRejected }))
      }
    }
    const sealed = await sealSnapshot(state, 'room', 0, upTo(0))
    for (const unknown of [0, 5]) {
      sealed[0] = unknown
      expect(() => openSnapshot(sealed, 'room', 0, upTo(0))).toThrow(expect.objectContaining({ code: ErrorCode.VersionMismatch }))
    }
  })

  it('refuses a wrong key, room or epoch as envelope_rejected', async () => {
    const sealed = await sealSnapshot(stateOf(10), 'room', 1, upTo(1))
    for (const [room, epoch, with_] of [
      ['other', 1, upTo(1)],
      ['room', 1, [keys[0]!, randomBytes(32)]],
      ['room', 1, [randomBytes(32), keys[1]!]],
    ] as const) {
      expect(() => openSnapshot(sealed, room, epoch, with_)).toThrow(expect.objectContaining({ code: ErrorCode.EnvelopeRejected }))
    }
    const atTwo = await sealSnapshot(stateOf(10), 'room', 2, upTo(2))
    expect(() => openSnapshot(atTwo, 'room', 1, upTo(1))).toThrow(expect.objectContaining({ code: ErrorCode.EnvelopeRejected }))
  })
})

describe('snapshot deflating with compression streams (browsers)', () => {
  it('feeds the stream a 256 KiB step at a time, pausing between steps, and round-trips', async () => {
    const state = stateOf(8000)
    let pauses = 0
    const deflated = await deflateState(state, 'streams', async () => {
      pauses++
    })
    expect(pauses).toBe(Math.ceil(state.length / (256 * 1024)) - 1)
    expect(pauses).toBeGreaterThan(0)
    expect(await inflateState(deflated, state.length, 'zlib')).toEqual(state)
  })
})

type Inflate = (deflated: Uint8Array, length: number) => Promise<Uint8Array>
describe.each<[string, Via, Inflate]>([
  ['zlib', 'zlib', (d, l) => inflateState(d, l, 'zlib')],
  ['compression streams', 'streams', (d, l) => inflateState(d, l, 'streams')],
  ['zlib, synchronously', 'zlib', async (d, l) => inflateStateSync(d, l)!],
])('snapshot inflating (%s)', (_, via, inflate) => {
  it('round-trips a state', async () => {
    const state = stateOf(500)
    const deflated = await deflateState(state, via)
    expect(await inflate(deflated, state.length)).toEqual(state)
  })

  it('refuses output past the declared length (a member\'s "zip bomb") without inflating past it', async () => {
    // 64 MiB of zeros deflate to ~64 KB; declared as 1 MiB.
    const bomb = deflateRawSync(new Uint8Array(64 * 1024 * 1024))
    const err = await rejection(inflate(bomb, 1024 * 1024))
    expect(err.code).toBe(ErrorCode.Malformed)
  })

  it('refuses output short of the declared length', async () => {
    const state = stateOf(50)
    const err = await rejection(inflate(await deflateState(state, via), state.length + 1))
    expect(err.code).toBe(ErrorCode.Malformed)
    expect(err.message).toMatch(/not the .* it declares/)
  })

  it('refuses a length no DEFLATE stream of that size reaches, or over the cap, before inflating', async () => {
    const tiny = deflateRawSync(new Uint8Array(10))
    for (const length of [0, -1, 1.5, tiny.length * 1032 + 1, MAX_SNAPSHOT_STATE_BYTES + 1]) {
      const err = await rejection(inflate(tiny, length))
      expect(err.code).toBe(ErrorCode.Malformed)
    }
  })

  it('refuses garbage and a truncated stream as malformed', async () => {
    const state = stateOf(200)
    const deflated = await deflateState(state, via)
    for (const bytes of [randomBytes(1000), deflated.subarray(0, deflated.length >> 1), new Uint8Array(0)]) {
      const err = await rejection(inflate(bytes, state.length))
      expect(err.code).toBe(ErrorCode.Malformed)
    }
  })
})
