import { deflateRawSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { randomBytes } from '../../src/shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../../src/shared/errors.js'
import { deflateState, inflateState, inflateStateSync, MAX_SNAPSHOT_STATE_BYTES, type Via } from '../../src/shared/snapshot-deflate.js'
import { inflateSnapshot, openSnapshot, sealSnapshot } from '../../src/shared/snapshot-seal.js'

const epochKey = randomBytes(32)
const firstKey = randomBytes(32)

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

describe('snapshot seal', () => {
  it('seals compressed (version 2) and opens to the same state, several times smaller than uncompressed', async () => {
    const state = stateOf(2000)
    const sealed = await sealSnapshot(state, 'room', 3, epochKey, firstKey)
    expect(sealed[0]).toBe(2)
    const plain = await sealSnapshot(state, 'room', 3, epochKey, firstKey, undefined, false)
    expect(sealed.length * 4).toBeLessThan(plain.length)
    expect(await inflateSnapshot(openSnapshot(sealed, 'room', 3, epochKey, firstKey))).toEqual(state)
  })

  it('seals a state deflated elsewhere (the history replica’s thread) as version 2, even where asked not to compress', async () => {
    const state = stateOf(2000)
    const deflated = new Uint8Array(deflateRawSync(state, { level: 1 }))
    for (const compress of [true, false]) {
      const sealed = await sealSnapshot({ deflated, length: state.length }, 'room', 3, epochKey, firstKey, undefined, compress)
      expect(sealed[0]).toBe(2)
      expect(await inflateSnapshot(openSnapshot(sealed, 'room', 3, epochKey, firstKey))).toEqual(state)
    }
    // A wrong length travels sealed and is caught when the snapshot is inflated, never past it.
    const lying = await sealSnapshot({ deflated, length: state.length - 1 }, 'room', 3, epochKey, firstKey)
    expect((await rejection(inflateSnapshot(openSnapshot(lying, 'room', 3, epochKey, firstKey)))).code).toBe(ErrorCode.Malformed)
  })

  it('still opens version 1 (uncompressed), as written before the fourteenth session', async () => {
    const state = stateOf(10)
    const sealed = await sealSnapshot(state, 'room', 0, epochKey, firstKey, undefined, false)
    expect(sealed[0]).toBe(1)
    expect(openSnapshot(sealed, 'room', 0, epochKey, firstKey)).toEqual({ state })
  })

  it('refuses a version byte changed either way (it is authenticated) and an unknown version', async () => {
    const state = stateOf(10)
    for (const compress of [true, false]) {
      const sealed = await sealSnapshot(state, 'room', 0, epochKey, firstKey, undefined, compress)
      sealed[0] = compress ? 1 : 2
      expect(() => openSnapshot(sealed, 'room', 0, epochKey, firstKey)).toThrow(expect.objectContaining({ code: ErrorCode.EnvelopeRejected }))
    }
    const sealed = await sealSnapshot(state, 'room', 0, epochKey, firstKey)
    sealed[0] = 3
    expect(() => openSnapshot(sealed, 'room', 0, epochKey, firstKey)).toThrow(expect.objectContaining({ code: ErrorCode.VersionMismatch }))
  })

  it('refuses a wrong key, room or epoch as envelope_rejected', async () => {
    const sealed = await sealSnapshot(stateOf(10), 'room', 1, epochKey, firstKey)
    for (const [room, epoch, key] of [
      ['other', 1, epochKey],
      ['room', 2, epochKey],
      ['room', 1, randomBytes(32)],
    ] as const) {
      expect(() => openSnapshot(sealed, room, epoch, key, firstKey)).toThrow(expect.objectContaining({ code: ErrorCode.EnvelopeRejected }))
    }
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
