import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import type { ClientContext } from '../../src/client/client-context.js'
import { OwnMessages } from '../../src/client/own-messages.js'
import { SealQueue, type SealQueueHost, setFlushWait } from '../../src/client/seal-queue.js'
import { SnapshotSource } from '../../src/client/snapshot-source.js'
import type { Batch } from '../../src/client/storage/device-store.js'
import type { SessionWriterIds } from '../../src/client/writer-ids.js'
import { generateSigningKeyPair, randomBytes } from '../../src/shared/crypto/index.js'
import { openEnvelope, readEnvelope } from '../../src/shared/envelope.js'
import { ErrorCode, PetrelError } from '../../src/shared/errors.js'
import { OUTER_LOG } from '../../src/shared/outer-keys.js'

const ROOM = 'room-1'
const device = generateSigningKeyPair()
const key = randomBytes(32)

/** An inner update setting `messages[id]`, as a send makes it. */
function update(doc: Y.Doc, id: string): Uint8Array {
  let out: Uint8Array | undefined
  const take = (u: Uint8Array) => {
    out = u
  }
  doc.on('update', take)
  doc.getMap('messages').set(id, { t: id })
  doc.off('update', take)
  return out!
}

/** A conversation's side of sealing: a real outer document; commits that land when the test says. */
function setup(options: { keys?: Map<number, Uint8Array>; failCommit?: boolean; offline?: boolean; rotationDue?: boolean } = {}) {
  const outer = new Y.Doc()
  const inner = new Y.Doc()
  const own = new OwnMessages(ROOM)
  const commits: Array<{ batch: Batch; soon: boolean; land: () => void; fail: (e: Error) => void }> = []
  const durable: number[] = []
  const statuses: string[][] = []
  const errors: PetrelError[] = []
  const keys = options.keys ?? new Map([[0, key]])
  let keyArrived: () => void = () => {}
  let outgoing: Promise<void> = Promise.resolve()
  let storeFailed = false
  let epoch = 0
  let rotationDue = options.rotationDue === true
  const rotationWaiters: Array<() => void> = []
  const host: SealQueueHost = {
    id: ROOM,
    ctx: { identity: { devicePub: device.publicKey, deviceSecret: device.secretKey }, connection: { maxEnvelopeBytes: 1 << 20 } } as unknown as ClientContext,
    outer,
    own,
    source: new SnapshotSource(async () => []),
    writerIds: { startTaking: async () => {}, held: false, taken: async () => {} } as unknown as SessionWriterIds,
    get epoch() {
      return epoch
    },
    epochKeys: keys,
    firstKey: () => new Promise<void>((r) => (keyArrived = r)),
    get rotationDue() {
      return rotationDue
    },
    rotationDone: () => new Promise<void>((r) => rotationWaiters.push(r)),
    closed: false,
    handedToRelay: !options.offline,
    writeOuterKeys: (fn) => {
      const updates: Uint8Array[] = []
      const take = (u: Uint8Array) => updates.push(u)
      outer.on('update', take)
      let result: ReturnType<typeof fn> | undefined
      outer.transact(() => {
        result = fn(outer.getMap<Uint8Array>(OUTER_LOG))
      })
      outer.off('update', take)
      return { key: result!, updates }
    },
    commit: (batch, opts) =>
      new Promise<void>((resolve, reject) => {
        commits.push({ batch, soon: opts?.soon === true, land: resolve, fail: reject })
        if (options.failCommit) reject(new Error('disk full'))
      }),
    afterOutgoing: (job) => {
      const run = outgoing.then(job)
      outgoing = run.then(
        () => undefined,
        () => undefined,
      )
      return run
    },
    appended: () => {},
    storeFailed: () => {
      storeFailed = true
    },
    statusesChanged: (ids) => statuses.push(ids),
    sealedDurably: (_epoch, n) => durable.push(n),
    reportError: (err) => errors.push(err),
  }
  /** The due rotation folded: `next` is the new epoch's key. */
  const rotated = (next: Uint8Array) => {
    epoch++
    keys.set(epoch, next)
    rotationDue = false
    for (const wake of rotationWaiters.splice(0)) wake()
  }
  return { seals: new SealQueue(host), inner, outer, own, commits, durable, statuses, errors, keys, keyArrived: () => keyArrived(), failed: () => storeFailed, rotated }
}

const tick = () => new Promise((r) => setTimeout(r, 5))

describe('seal queue', () => {
  afterEach(() => setFlushWait())

  it('seals what was queued meanwhile as one batch: envelopes that open under the key, stored with the inner updates in one commit', async () => {
    const s = setup()
    const first = s.seals.add(update(s.inner, 'a'), ['a'])
    const second = s.seals.add(update(s.inner, 'b'), ['b'])
    await tick()
    expect(s.commits).toHaveLength(1)
    const { batch, soon } = s.commits[0]!
    expect(soon).toBe(true)
    expect(batch.append!.filter((r) => r.doc === 'inner')).toHaveLength(2)
    expect(batch.append!.filter((r) => r.doc === 'outer')).toHaveLength(1)
    const log = s.outer.getMap<Uint8Array>(OUTER_LOG)
    const [envelopeKey] = [...log.keys()]
    const opened = openEnvelope(ROOM, readEnvelope(log.get(envelopeKey!)!), key)
    const copy = new Y.Doc()
    Y.applyUpdate(copy, opened.kind === 'update' ? opened.update : new Uint8Array())
    expect([...copy.getMap('messages').keys()].sort()).toEqual(['a', 'b'])
    // The outbox row names both messages, pending in that envelope.
    expect(s.own.inEnvelope(envelopeKey!).map(([id]) => id)).toEqual(['a', 'b'])
    expect(batch.put!.map(([k]) => k)).toHaveLength(1)
    s.commits[0]!.land()
    await Promise.all([first, second])
    expect(s.durable).toEqual([2])
  })

  it('seals nothing while a removal waits for a new key, and seals what waited under the new key once it comes', async () => {
    const s = setup({ rotationDue: true })
    const sent = s.seals.add(update(s.inner, 'a'), ['a'])
    const more = s.seals.add(update(s.inner, 'b'), ['b'])
    await tick()
    // Under the current key the member just removed could read it: nothing is sealed.
    expect(s.commits).toHaveLength(0)
    expect(s.outer.getMap(OUTER_LOG).size).toBe(0)
    const next = randomBytes(32)
    s.rotated(next)
    await tick()
    expect(s.commits).toHaveLength(1)
    const log = s.outer.getMap<Uint8Array>(OUTER_LOG)
    expect([...log.values()].map((e) => readEnvelope(e).epoch)).toEqual([1])
    expect(() => openEnvelope(ROOM, readEnvelope([...log.values()][0]!), key)).toThrow()
    expect(openEnvelope(ROOM, readEnvelope([...log.values()][0]!), next).kind).toBe('update')
    s.commits[0]!.land()
    await Promise.all([sent, more])
  })

  it('rejects what waits for a due rotation once the conversation is refused for good: nothing waits forever', async () => {
    const s = setup({ rotationDue: true })
    const sent = s.seals.add(update(s.inner, 'a'), ['a'])
    await tick()
    const refused = new PetrelError(ErrorCode.Refused, 'relay refused the conversation: not member: removed from the conversation')
    s.seals.failQueued(refused)
    await expect(sent).rejects.toBe(refused)
    expect(s.commits).toHaveLength(0)
  })

  it('seals and hands on the next batches while the one before is still on its way to disk, and settles them in order', async () => {
    setFlushWait(1)
    const s = setup()
    const settled: string[] = []
    const all: Array<Promise<number>> = []
    for (const id of ['a', 'b', 'c']) {
      all.push(s.seals.add(update(s.inner, id), [id]).then(() => settled.push(id)))
      await tick()
    }
    // Three commits issued, none landed: no batch waited for the one before to be durable.
    expect(s.commits).toHaveLength(3)
    expect(settled).toEqual([])
    // The store lands commits in the order issued; each batch settles with its own.
    s.commits[0]!.land()
    await all[0]
    expect(settled).toEqual(['a'])
    s.commits[1]!.land()
    s.commits[2]!.land()
    await Promise.all(all)
    expect(settled).toEqual(['a', 'b', 'c'])
    expect(s.durable).toEqual([1, 1, 1])
  })

  it('writes at once what it could not hand to the relay (offline): nothing else holds it', async () => {
    const s = setup({ offline: true })
    const sent = s.seals.add(update(s.inner, 'a'), ['a'])
    await tick()
    expect(s.commits[0]!.soon).toBe(false)
    s.commits[0]!.land()
    await sent
  })

  it('fails the batch with the reason when its commit fails, and keeps the messages visible as failed', async () => {
    const s = setup({ failCommit: true })
    const sent = s.seals.add(update(s.inner, 'a'), ['a'])
    await expect(sent).rejects.toThrow(/disk full/)
    expect(s.failed()).toBe(true)
    expect(s.own.get('a')?.failure).toMatch(/storage failed: .*disk full/)
    expect(s.errors[0]?.code).toBe(ErrorCode.StorageFailed)
    expect(s.statuses.at(-1)).toEqual(['a'])
    // Online, its envelope went to the relay as it was written: it stays in that envelope
    // (for the relay's ✓ to find, and a retry to seal again); offline, it is in none.
    const [envelopeKey] = [...s.outer.getMap(OUTER_LOG).keys()]
    expect(s.own.inEnvelope(envelopeKey!).map(([id]) => id)).toEqual(['a'])
    const offline = setup({ failCommit: true, offline: true })
    await expect(offline.seals.add(update(offline.inner, 'b'), ['b'])).rejects.toThrow(/disk full/)
    expect(offline.own.get('b')).toMatchObject({ envelopeKey: '', failure: expect.stringMatching(/storage failed/) })
  })

  it('waits for the first key of a conversation this device was added to, and fails if it closes first', async () => {
    const waiting = setup({ keys: new Map() })
    const sent = waiting.seals.add(update(waiting.inner, 'a'), ['a'])
    await tick()
    expect(waiting.commits).toHaveLength(0)
    waiting.keys.set(0, key)
    waiting.keyArrived()
    await tick()
    expect(waiting.commits).toHaveLength(1)
    waiting.commits[0]!.land()
    await sent
    const closing = setup({ keys: new Map() })
    const never = closing.seals.add(update(closing.inner, 'b'), ['b'])
    await tick()
    closing.keyArrived()
    await expect(never).rejects.toBeInstanceOf(PetrelError)
    await expect(never).rejects.toMatchObject({ code: ErrorCode.Closed })
  })

  it('keeps a tombstone out of this device’s own log: it goes to the others only', async () => {
    const s = setup()
    const sent = s.seals.add(update(s.inner, 'tomb'), [], true)
    await tick()
    expect(s.commits[0]!.batch.append!.filter((r) => r.doc === 'inner')).toEqual([])
    expect(s.commits[0]!.batch.append!.filter((r) => r.doc === 'outer')).toHaveLength(1)
    s.commits[0]!.land()
    await sent
  })
})
