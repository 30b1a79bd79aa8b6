/** Real relays on port 0 and real clients on temp storage, for integration tests. */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type ClientOptions, createClient, type Conversation, type DeviceStore, type Message, type PetrelError } from '../../src/client/index.js'
import { createRelay, type Relay, type RelayOptions } from '../../src/relay/index.js'
import { generateAgreementKeyPair, generateSigningKeyPair, randomBytes, SignatureDomain, type SigningKeyPair, signWithDomain } from '../../src/shared/crypto/index.js'
import {
  AdmissionKind,
  certificatePayload,
  encodeAdmission,
  encodeCertificate,
  encodeGenesisBody,
  encodeRecord,
  RecordKind,
  recordSigningPayload,
  roomIdFor,
} from '../../src/shared/records.js'
import { type Frame, FrameType, readFrame, writeFrame } from '../../src/shared/wire.js'
import { WebSocket } from 'ws'

export type Client = Awaited<ReturnType<typeof createClient>>

export class World {
  readonly dir = mkdtempSync(join(tmpdir(), 'petrel-test-'))
  readonly clients: Client[] = []
  readonly relays: Relay[] = []
  readonly errors = new Map<Client, PetrelError[]>()
  readonly logLines: string[] = []
  port = 0

  get dbPath(): string {
    return join(this.dir, 'relay.db')
  }

  async relay(options: RelayOptions = {}): Promise<Relay> {
    const relay = await createRelay({
      port: this.port,
      database: this.dbPath,
      logLevel: 'debug',
      logWrite: (line) => this.logLines.push(line),
      ...options,
    })
    // Restarts reuse the port so clients find the relay again.
    this.port = relay.port
    this.relays.push(relay)
    return relay
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}`
  }

  async client(name: string, options: Partial<ClientOptions> = {}): Promise<Client> {
    const client = await createClient({ relay: this.url, name, storage: join(this.dir, `${name}.db`), ...options })
    this.clients.push(client)
    const errors: PetrelError[] = []
    this.errors.set(client, errors)
    client.on('error', (err) => errors.push(err))
    return client
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.clients.map((c) => c.close()))
    await Promise.allSettled(this.relays.map((r) => r.close()))
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** Poll until `fn` returns truthy (events drive the engine; this only observes). */
/**
 * A device store on a disk of the outside world (slow, nearly full): reads go to `disk`,
 * commits through `commit`, which decides when and whether to pass them on.
 */
export function onDisk(disk: DeviceStore, commit: DeviceStore['commit']): DeviceStore {
  return {
    kind: disk.kind,
    get: (key) => disk.get(key),
    list: (prefix) => disk.list(prefix),
    loadLog: (convId, doc) => disk.loadLog(convId, doc),
    close: () => disk.close(),
    commit,
  }
}

export async function until<T>(fn: () => T | Promise<T>, timeoutMs = 10_000, what = 'condition'): Promise<NonNullable<T>> {
  const start = Date.now()
  for (;;) {
    const v = await fn()
    if (v) return v as NonNullable<T>
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

export const texts = (conv: Conversation): string[] => conv.messages().map((m: Message) => m.text)

/** Alice creates a conversation and Bob joins it; both online. */
export async function pair(world: World, a = 'alice', b = 'bob') {
  const alice = await world.client(a)
  const bob = await world.client(b)
  await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'clients online')
  const aliceConv = await alice.createConversation({ title: 'Trip' })
  const invite = await aliceConv.invite()
  const bobConv = await bob.join(invite)
  return { alice, bob, aliceConv, bobConv, invite }
}

/** The relay has it (✓) or better: statuses only move forward. */
export const atLeastSent = (status: string | undefined): boolean => status === 'sent' || status === 'delivered' || status === 'read'

/** A device speaking the wire protocol by hand (for access, limit and fuzz tests), authenticated. */
export async function rawDevice(url: string, as?: { user: SigningKeyPair; device: SigningKeyPair; certificate: Uint8Array }) {
  const user = as?.user ?? generateSigningKeyPair()
  const device = as?.device ?? generateSigningKeyPair()
  const payload = certificatePayload(user.publicKey, device.publicKey, generateAgreementKeyPair().publicKey, Date.now())
  const certificate = as?.certificate ?? encodeCertificate(payload, await signWithDomain(SignatureDomain.DeviceCertificate, user.secretKey, payload))
  const ws = new WebSocket(url)
  ws.binaryType = 'nodebuffer'
  const frames: Frame[] = []
  let closed: { code: number; reason: string } | undefined
  ws.on('message', (data: Buffer) => {
    try {
      frames.push(readFrame(new Uint8Array(data)))
    } catch {
      // a test may provoke anything
    }
  })
  ws.on('close', (code, reason) => {
    closed = { code, reason: reason.toString() }
  })
  ws.on('error', () => {})
  await until(() => frames.some((f) => f.type === FrameType.Hello) || closed !== undefined)
  const hello = frames.find((f) => f.type === FrameType.Hello)
  if (!hello || hello.type !== FrameType.Hello) throw new Error('no hello')
  ws.send(writeFrame({ type: FrameType.Auth, certificate, signature: await signWithDomain(SignatureDomain.ConnectChallenge, device.secretKey, hello.challenge) }))
  await until(() => frames.some((f) => f.type === FrameType.Ready))
  return { ws, frames, closed: () => closed, user, device, certificate }
}

/** A genesis for a new room of `dev`'s, sent as `open`; resolves with the room id once opened. */
export async function openNewRoom(dev: Awaited<ReturnType<typeof rawDevice>>): Promise<string> {
  const nonce = randomBytes(16)
  const room = roomIdFor(nonce, dev.user.publicKey)
  const body = encodeGenesisBody({ room, nonce, createdAt: Date.now() })
  const sig = await signWithDomain(SignatureDomain.Genesis, dev.device.secretKey, recordSigningPayload(RecordKind.Genesis, body))
  const genesis = encodeRecord(RecordKind.Genesis, body, dev.certificate, sig)
  dev.ws.send(writeFrame({ type: FrameType.Open, room, admission: encodeAdmission({ kind: AdmissionKind.Genesis, genesis }) }))
  await until(() => dev.frames.some((f) => f.type === FrameType.Opened && f.room === room))
  return room
}

/** Key rotations `conv` makes until the relay refuses one (its new epoch is undone); `other` sees each one stored. */
export async function rotateUntilRefused(conv: Conversation, other: Conversation): Promise<number> {
  for (let i = 0; i < 400; i++) {
    const epoch = conv.epoch
    await conv.rotateKey()
    const took = await until(() => (other.epoch > epoch ? 'yes' : conv.epoch <= epoch ? 'no' : undefined), 5000, `rotation ${i}`)
    if (took === 'no') return i
  }
  throw new Error('no rotation was refused')
}
