/**
 * Benchmark 4, catch-up: Bob's device is closed while Alice sends N messages; then it starts
 * again (storage on disk, relay in its own process) and we time from `createClient` until all
 * N are shown. Reference: `Y.applyUpdate` of N plaintext updates of the same shape into a
 * fresh document — what a client with no encryption, signatures or storage would do.
 */
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as Y from 'yjs'
import { createClient } from '../src/client/index.js'
import { median, relayCounter, startProfile, until, untilChanged } from './common.js'
import { startServer } from './server-process.js'

export interface CatchupResult {
  /** Medians over the rounds. */
  ms: number
  referenceMs: number
  messages: number
  /** Medians over the rounds, of {@link CatchupRound.signatureFloorMs}. */
  signatureFloorMs: number
  /** Rows the relay stored for the room (envelopes and records): each has a signature the device checks. */
  signedRows: number
  /**
   * Each counted round's figures, in order; `cpuMs`: the catching-up process's CPU time (all its
   * threads); `relayBytesOut`: what the relay sent in the round (Alice's warm-up connection
   * included), `partBytesSpared`: the snapshot parts it spared the device (placeholders sent instead).
   */
  rounds: CatchupRound[]
  /** The warm-up rounds before them, run the same way and not counted. */
  warmupRounds: CatchupRound[]
}

export interface CatchupRound {
  ms: number
  referenceMs: number
  /** Checking as many Ed25519 signatures as the relay stored rows, with WebCrypto alone on every core: the floor under a catch-up of signed envelopes (see signatureFloor). */
  signatureFloorMs: number
  cpuMs: number
  relayBytesOut: number
  partBytesSpared: number
}

/**
 * Rounds run first and not counted. The reference is timed warm in every round (three runs in a
 * process whose Yjs has just caught a device up), so Petrel is compared warm too: the first
 * round of a process also compiles the client's code (five rounds measured 181, 156, 147, 147
 * and 140 ms against 57–60). Two since the twenty-fourth session: a process's second round is
 * its slowest. After one warm-up round, the first counted one was the slowest in each of three
 * runs (332, 260 and 286 ms, against 155–242 for the rounds after it) and, with three counted,
 * could set the median; with two, the second warm-up took 290 ms against 222 and 182–196 for the
 * counted ones. Their figures are printed beside the counted ones.
 */
export const CATCHUP_WARMUP_ROUNDS = 2

/**
 * `burst`: how many sends Alice makes at once. Sends made together share envelopes (about 60
 * short messages each, `seal-chunks.ts`), so 500 at a time is a device draining its outbox or
 * a busy group; 1 (each send awaited) gives every message an envelope of its own — one
 * signature to check per message, the worst case.
 */
export async function catchup(messages: number, burst = 500, rounds = 3, warmup = CATCHUP_WARMUP_ROUNDS): Promise<CatchupResult> {
  let server: Awaited<ReturnType<typeof startServer>> | undefined = await startServer('petrel')
  let relayData: string | undefined
  const dir = mkdtempSync(join(tmpdir(), 'petrel-bench-catchup-'))
  try {
    const aliceOptions = { relay: server.url, name: 'alice', storage: join(dir, 'alice.db'), keyRotation: { messages: 1e9 } }
    const alice = await createClient(aliceOptions)
    const conv = await alice.createConversation({ title: 'catch-up' })
    await conv.whenSynced(30_000)
    const bobOptions = { relay: server.url, name: 'bob', storage: join(dir, 'bob.db') }
    let bob = await createClient(bobOptions)
    await bob.join(await conv.invite())
    await bob.close()
    const texts: string[] = []
    for (let i = 0; i < messages; i++) texts.push(`message ${i} ${'x'.repeat(80)}`)
    for (let i = 0; i < messages; i += burst) await Promise.all(texts.slice(i, i + burst).map((t) => conv.send(t)))
    await until(() => conv.messages().every((m) => m.status !== 'pending'), 120_000, 'alice sent everything')
    await alice.close()
    const signedRows = await relayCounter(server.url, 'petrel_rows_stored_total')
    const floorItems = await signedItems(signedRows)

    // Reference: the same number of plaintext message updates, applied one by one.
    const source = new Y.Doc()
    const updates: Uint8Array[] = []
    source.on('update', (u: Uint8Array) => updates.push(u))
    const map = source.getMap('messages')
    for (let i = 0; i < messages; i++) map.set(`user.${i.toString(36)}`, { t: texts[i]!, at: Date.now(), h: i, n: 0, d: 'device' })

    // Bob's device and the relay as they were before Bob caught up, so every round starts from
    // the same state: once Bob holds everything, the relay may compact behind Alice's snapshots.
    await server.stop({ keepData: true })
    relayData = server.dir
    server = undefined
    const seed = join(dir, 'bob-offline.db')
    copyFileSync(bobOptions.storage, seed)
    for (const suffix of ['-wal', '-shm']) if (existsSync(bobOptions.storage + suffix)) throw new Error('bob.db was not checkpointed on close')
    const results: CatchupRound[] = []
    for (let round = 0; round < warmup + rounds; round++) {
      const storage = join(dir, `bob-${round}.db`)
      copyFileSync(seed, storage)
      server = await startServer('petrel', { from: relayData })
      // As Alice has just sent, the relay has the room loaded and its code warm.
      const warm = await createClient({ ...aliceOptions, relay: server.url })
      await (await warm.conversations())[0]!.whenSynced(30_000)
      await warm.close()
      const profile = round === Number(process.env.BENCH_CATCHUP_PROF_ROUND ?? warmup + rounds - 1) ? await startProfile('BENCH_CATCHUP_PROF', burst === 1 ? '.one-by-one.cpuprofile' : '') : undefined
      const t0 = performance.now()
      const cpu0 = process.cpuUsage()
      bob = await createClient({ ...bobOptions, relay: server.url, storage })
      const [bobConv] = await bob.conversations()
      // The newest message shown first (one row to read), then the whole list counted once.
      const newest = texts[messages - 1]
      await untilChanged(bobConv!, () => bobConv!.lastMessages(1)[0]?.text === newest && bobConv!.messages().length >= messages, 120_000, 'bob shows everything')
      const ms = performance.now() - t0
      const cpu = process.cpuUsage(cpu0)
      await profile?.()
      const relayBytesOut = await relayCounter(server.url, 'petrel_bytes_out_total')
      const partBytesSpared = await relayCounter(server.url, 'petrel_snapshot_part_bytes_spared_total')
      await bob.close()
      await server.stop()
      server = undefined

      // The reference is short and swings with whatever the collector does: three runs a round.
      const refs: number[] = []
      for (let k = 0; k < 3; k++) {
        const r0 = performance.now()
        const fresh = new Y.Doc()
        for (const u of updates) Y.applyUpdate(fresh, u)
        refs.push(performance.now() - r0)
        if (fresh.getMap('messages').size !== messages) throw new Error('reference did not apply')
      }
      const floors: number[] = []
      for (let k = 0; k < 3; k++) floors.push(await signatureFloor(floorItems))
      results.push({ ms, referenceMs: median(refs), signatureFloorMs: median(floors), cpuMs: (cpu.user + cpu.system) / 1000, relayBytesOut, partBytesSpared })
    }
    const counted = results.slice(warmup)
    return {
      ms: median(counted.map((r) => r.ms)),
      referenceMs: median(counted.map((r) => r.referenceMs)),
      signatureFloorMs: median(counted.map((r) => r.signatureFloorMs)),
      signedRows,
      messages,
      rounds: counted, warmupRounds: results.slice(0, warmup) }
  } finally {
    await server?.stop()
    if (relayData) rmSync(relayData, { recursive: true, force: true })
    rmSync(dir, { recursive: true, force: true })
  }
}

interface SignedItem {
  key: CryptoKey
  message: Uint8Array<ArrayBuffer>
  signature: Uint8Array<ArrayBuffer>
}

/** `n` Ed25519 signatures over 400-byte messages (an envelope of one short message is ~400 bytes). */
async function signedItems(n: number): Promise<SignedItem[]> {
  const pair = (await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify'])) as CryptoKeyPair
  const items: SignedItem[] = []
  for (let i = 0; i < n; i++) {
    const message = crypto.getRandomValues(new Uint8Array(400))
    items.push({ key: pair.publicKey, message, signature: new Uint8Array(await crypto.subtle.sign('Ed25519', pair.privateKey, message)) })
  }
  return items
}

/**
 * A second reference beside Y.applyUpdate: the signature checks alone, all at once on
 * WebCrypto's thread pool (every core), with nothing else to do. A device must check one
 * signature per envelope it receives, so a catch-up of envelopes sent one at a time cannot
 * finish faster than this on the same machine. Throws if any check fails.
 */
async function signatureFloor(items: SignedItem[]): Promise<number> {
  const t0 = performance.now()
  const verdicts = await Promise.all(items.map((it) => crypto.subtle.verify('Ed25519', it.key, it.signature, it.message)))
  const ms = performance.now() - t0
  if (!verdicts.every(Boolean)) throw new Error('signature floor: a check failed')
  return ms
}
