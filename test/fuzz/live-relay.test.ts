/**
 * A mutation fuzzer against a live relay while honest members keep chatting: the relay never
 * crashes, its event loop never stalls, honest messages keep flowing, and an authenticated
 * member who sends crafted Yjs updates (yjs issue 687, yjs tests/limits.tests.js) — as outer
 * updates to the relay or sealed inside envelopes to the other members — is refused and cut
 * off while everyone else survives. CI sends PETREL_FUZZ_FRAMES (default 20,000) frames; the
 * soak run sends 10⁶.
 */
import type { ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as Y from 'yjs'
import { afterEach, describe, expect, it } from 'vitest'
import type { Conversation } from '../../src/client/index.js'
import { randomBytes } from '../../src/shared/crypto/index.js'
import { sealEnvelope } from '../../src/shared/envelope.js'
import { envelopeKey } from '../../src/shared/outer-keys.js'
import { encodeAdmission, AdmissionKind, encodeGenesisBody, encodeRecord, RecordKind, recordSigningPayload, roomIdFor } from '../../src/shared/records.js'
import { RoomMessage, SyncStep, writeSyncMessage } from '../../src/shared/room-messages.js'
import { SignatureDomain, signWithDomain } from '../../src/shared/crypto/index.js'
import { FrameType, writeFrame } from '../../src/shared/wire.js'
import { pair, rawDevice, texts, until, World } from '../integration/harness.js'
import { startRelayOnAnyPort } from '../integration/relay-process.js'

const FRAMES = Number(process.env.PETREL_FUZZ_FRAMES ?? 20_000)
let world: World
let relayProcess: ChildProcess | undefined
afterEach(async () => {
  relayProcess?.kill('SIGKILL')
  relayProcess = undefined
  await world?.close()
})

function hostileVectors(): Uint8Array[] {
  const file = JSON.parse(readFileSync(new URL('../../../shared/vectors/yjs-hostile-updates.json', import.meta.url), 'utf8')) as {
    vectors: Array<{ hex?: string; bytes?: number[] }>
  }
  const out = file.vectors.map((v) => (v.hex ? Uint8Array.from(Buffer.from(v.hex, 'hex')) : Uint8Array.from(v.bytes!)))
  // V1 shapes of the same attacks: a huge clock range, a huge struct count, duplicate clients.
  out.push(Uint8Array.of(1, 1, 5, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0))
  out.push(Uint8Array.of(1, 0xff, 0xff, 0xff, 0xff, 0x0f, 5, 0, 0, 1, 0))
  out.push(Uint8Array.of(2, 1, 5, 1, 0, 1, 1, 5, 0, 0, 1, 0))
  return out
}

function mutate(frame: Uint8Array): Uint8Array {
  const kind = Math.random()
  if (kind < 0.3) return randomBytes(1 + Math.floor(Math.random() * 64))
  if (kind < 0.6) return frame.subarray(0, Math.floor(Math.random() * frame.length))
  const out = frame.slice()
  const flips = 1 + Math.floor(Math.random() * 4)
  for (let i = 0; i < flips; i++) out[Math.floor(Math.random() * out.length)]! ^= 1 << Math.floor(Math.random() * 8)
  return out
}

/** An authenticated stranger with a room of its own, able to send room frames. */
async function attacker(url: string) {
  const dev = await rawDevice(url)
  const nonce = randomBytes(16)
  const room = roomIdFor(nonce, dev.user.publicKey)
  const body = encodeGenesisBody({ room, nonce, createdAt: Date.now() })
  const genesis = encodeRecord(
    RecordKind.Genesis,
    body,
    dev.certificate,
    await signWithDomain(SignatureDomain.Genesis, dev.device.secretKey, recordSigningPayload(RecordKind.Genesis, body)),
  )
  dev.ws.send(writeFrame({ type: FrameType.Open, room, admission: encodeAdmission({ kind: AdmissionKind.Genesis, genesis }) }))
  await until(() => dev.frames.some((f) => f.type === FrameType.Opened) || dev.closed() !== undefined)
  return { ...dev, room }
}

describe('live relay under a mutation fuzzer', () => {
  it(`survives ${FRAMES} mutated frames while honest members keep chatting, without stalling`, async () => {
    world = new World()
    // The relay in a process of its own, so its event loop is measured apart from the clients'.
    const started = await startRelayOnAnyPort(join(world.dir, 'relay.db'), ['--limits', JSON.stringify({ framesPerSecond: 1e9, frameBurst: 1e9 })])
    relayProcess = started.proc
    const { port } = started
    world.port = port
    const { aliceConv, bobConv } = await pair(world)
    let sent = 0
    let honest = true
    const chat = (async () => {
      while (honest) {
        await aliceConv.send(`honest ${sent++}`)
        await new Promise((r) => setTimeout(r, 20))
      }
    })()
    // Awaited below; marked handled so a timed-out run reports the timeout, not this loop.
    chat.catch(() => {})
    const vectors = hostileVectors()
    let frames = 0
    let connections = 0
    // Several attackers at once: most mutated frames get their connection cut at once, so
    // connection set-up, not the relay, would otherwise pace the run.
    const attackerLoop = async () => {
      while (frames < FRAMES) {
        const a = await attacker(world.url)
        connections++
        const seeds = [
          writeFrame({ type: FrameType.Heartbeat }),
          writeFrame({ type: FrameType.Open, room: a.room, admission: new Uint8Array(0) }),
          writeFrame({ type: FrameType.Room, room: a.room, message: writeSyncMessage(SyncStep.Step1, Uint8Array.of(0)) }),
          ...vectors.map((v) => writeFrame({ type: FrameType.Room, room: a.room, message: writeSyncMessage(SyncStep.Update, v) })),
          writeFrame({ type: FrameType.Room, room: a.room, message: Uint8Array.of(RoomMessage.Awareness, 3, 1, 2, 3) }),
        ]
        // Mutated frames until the relay cuts this connection off, then a fresh attacker.
        for (let i = 0; i < 500 && frames < FRAMES && a.closed() === undefined && a.ws.readyState === 1; i++) {
          const seed = seeds[Math.floor(Math.random() * seeds.length)]!
          a.ws.send(Math.random() < 0.2 ? seed : mutate(seed))
          frames++
          if (i % 50 === 0) await new Promise((r) => setImmediate(r))
        }
        a.ws.terminate()
      }
    }
    await Promise.all(Array.from({ length: 4 }, attackerLoop))
    honest = false
    await chat
    await until(() => texts(bobConv).length === sent, 10_000, 'every honest message arrived')
    expect(texts(bobConv)).toEqual(Array.from({ length: sent }, (_, i) => `honest ${i}`))
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    const gauge = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1])
    const maxStallMs = gauge('petrel_event_loop_delay_max_seconds') * 1000
    const rejected = [...metrics.matchAll(/^petrel_rejected_total\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0)
    console.log(
      `live fuzz: ${frames} frames over ${connections} attacker connections, ${rejected} rejected, ${sent} honest messages delivered, relay event loop max ${maxStallMs.toFixed(1)} ms, p99 ${(gauge('petrel_event_loop_delay_p99_seconds') * 1000).toFixed(1)} ms`,
    )
    expect(relayProcess.exitCode).toBeNull()
    // No stall. Both figures also count time the relay process was not scheduled at all — on
    // a 2-core runner the suite's other workers (the scale-out tests under CI) and the four
    // attackers share the cores. Measured over eight runs here: p99 19–45 ms alone or in the
    // local suite, up to 70 ms under CI; worst sample 31–272 ms. The bounds are what only real
    // blocking work (tens of ms per frame, or seconds at once) breaks.
    expect(gauge('petrel_event_loop_delay_p99_seconds') * 1000).toBeLessThan(150)
    expect(maxStallMs).toBeLessThan(750)
    expect(rejected).toBeGreaterThan(0)
  }, Math.max(300_000, FRAMES * 3))

  it('cuts off a member who sends crafted Yjs updates; inside envelopes the other members refuse them and keep chatting', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, bob, aliceConv, bobConv, invite } = await pair(world)
    const mallory = await world.client('mallory')
    const malConv = await mallory.join(invite)
    const vectors = hostileVectors()
    // Sealed inside valid, signed envelopes: the relay stores them (it cannot read them).
    const identity = (mallory as unknown as { identity: { devicePub: Uint8Array; deviceSecret: Uint8Array } }).identity
    const outer = (malConv as unknown as { outer: Y.Doc }).outer
    for (const update of vectors) {
      const envelope = await sealEnvelope({ room: malConv.id, epoch: 0, key: malConv.keys().get(0)!, senderDevicePub: identity.devicePub, senderDeviceSecret: identity.deviceSecret, update })
      outer.transact(() => outer.getMap<Uint8Array>('log').set(envelopeKey(outer.clientID, Y.getState(outer.store, outer.clientID)), envelope))
    }
    const refused = (c: typeof alice) => world.errors.get(c)!.filter((e) => e.code === 'authorship_violation' || e.code === 'malformed').length
    await until(() => refused(alice) >= vectors.length && refused(bob) >= vectors.length, 10_000, 'members refuse every crafted update')
    await aliceConv.send('still chatting')
    await until(() => texts(bobConv).includes('still chatting'))
    // As outer updates straight to the relay: refused, and the sender is cut off.
    const ws = (malConv as unknown as { provider: { ws: { send(b: Uint8Array): void } } }).provider.ws
    for (const v of vectors) ws.send(writeSyncMessage(SyncStep.Update, v))
    await until(() => relay.metrics.rejectedCount('malformed payload') >= 1, 5000, 'relay cuts mallory off')
    await bobConv.send('and still')
    await until(() => texts(aliceConv).includes('and still'))
    void (bobConv satisfies Conversation)
  })
})
