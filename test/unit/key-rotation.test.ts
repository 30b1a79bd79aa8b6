import { describe, expect, it } from 'vitest'
import type { ClientContext } from '../../src/client/client-context.js'
import { KeyRotation, type KeyRotationHost } from '../../src/client/key-rotation.js'
import type { MembershipBook } from '../../src/client/membership-book.js'
import type { MembershipState } from '../../src/shared/membership.js'

/** A conversation at epoch 0 whose rotations are recorded; each rotation waits until `release`. */
function setup(options: { messages?: number; ms?: number } = {}) {
  const log: string[] = []
  const state = { epoch: 0 }
  let release: () => void = () => {}
  const host = {
    ctx: {
      keyRotation: { messages: options.messages ?? 100, ms: options.ms ?? 60_000 },
      signRecord: async () => Uint8Array.of(1),
    } as unknown as ClientContext,
    book: { newEpoch: () => ({ epoch: state.epoch + 1, key: Uint8Array.of(state.epoch + 1), body: Uint8Array.of(0) }) } as unknown as MembershipBook,
    get membership() {
      return state as MembershipState
    },
    snapshotBusy: false as boolean,
    ready: async () => {},
    assertOpen: () => {},
    adoptEpochKey: (e: number) => {
      log.push(`key ${e}`)
      return [[`k${e}`, Uint8Array.of(e)]] as Array<[string, Uint8Array]>
    },
    commit: async () => {
      log.push('commit')
    },
    writeRecords: async () => {
      log.push('record')
      await new Promise<void>((r) => (release = r))
      state.epoch++
    },
    report: (err: unknown) => {
      throw err
    },
  } satisfies KeyRotationHost
  return { rotation: new KeyRotation(host), host, state, log, release: () => release() }
}

const settle = () => new Promise((r) => setTimeout(r, 0))

describe('key rotation', () => {
  it('rotates when a send crosses the threshold, storing the key before its record goes out', async () => {
    const { rotation, log, release } = setup({ messages: 100 })
    rotation.counted(0, 60, true)
    await settle()
    expect(log).toEqual([])
    rotation.counted(0, 40, true)
    await settle()
    expect(log).toEqual(['key 1', 'commit', 'record'])
    release()
  })

  it('leaves it to senders: receiving past the threshold only counts', async () => {
    const { rotation, log } = setup({ messages: 10 })
    rotation.counted(0, 50, false)
    await settle()
    expect(log).toEqual([])
    // The next send of this device rotates.
    rotation.counted(0, 1, true)
    await settle()
    expect(log).toContain('record')
  })

  it('rotates once the epoch is old, however few messages it carried', async () => {
    const { rotation, log } = setup({ messages: 1_000, ms: 0 })
    rotation.counted(0, 1, true)
    await settle()
    expect(log).toContain('record')
  })

  it('waits while a snapshot is written under the current key, and for counts of an epoch already over', async () => {
    const { rotation, host, log } = setup({ messages: 10 })
    host.snapshotBusy = true
    rotation.counted(0, 50, true)
    await settle()
    expect(log).toEqual([])
    host.snapshotBusy = false
    // Counted under epoch 5 while the membership is at 0: not a reason to rotate now.
    rotation.counted(5, 50, true)
    await settle()
    expect(log).toEqual([])
    rotation.counted(0, 50, true)
    await settle()
    expect(log).toContain('record')
  })

  it('runs one rotation at a time', async () => {
    const { rotation, log, release } = setup()
    const first = rotation.once()
    const second = rotation.once()
    await second
    await settle()
    expect(log.filter((e) => e === 'record')).toHaveLength(1)
    release()
    await first
    // Over: the next one runs.
    const third = rotation.once()
    await settle()
    expect(log.filter((e) => e === 'record')).toHaveLength(2)
    release()
    await third
  })

  it('starts counting afresh under a new epoch', async () => {
    const { rotation, state, log } = setup({ messages: 100 })
    rotation.counted(0, 90, true)
    state.epoch = 1
    rotation.counted(1, 20, true)
    await settle()
    expect(log).toEqual([])
    rotation.counted(1, 80, true)
    await settle()
    expect(log).toContain('record')
  })
})
