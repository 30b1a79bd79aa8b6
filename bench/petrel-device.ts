/**
 * A Petrel device speaking the wire protocol by hand, for benchmarks that measure the relay
 * rather than our client: it authenticates, creates or joins rooms with real signed records,
 * and sends envelopes sealed and framed before the clock starts. Nothing is skipped that the
 * relay checks — the frames are what a real client sends.
 */
import * as Y from 'yjs'
import { WebSocket } from 'ws'
import { decodeInviteToken } from '../src/client/invite-token.js'
import { generateAgreementKeyPair, generateSigningKeyPair, randomBytes, randomKey, SignatureDomain, signWithDomain } from '../src/shared/crypto/index.js'
import { sealEnvelope } from '../src/shared/envelope.js'
import { envelopeKey } from '../src/shared/outer-keys.js'
import {
  AdmissionKind,
  certificatePayload,
  encodeAdmission,
  encodeCertificate,
  encodeGenesisBody,
  encodeJoinBody,
  encodeRecord,
  readInviteBody,
  readRecord,
  RecordKind,
  recordSigningPayload,
  roomIdFor,
} from '../src/shared/records.js'
import { RoomMessage, SyncStep, writeSyncMessage } from '../src/shared/room-messages.js'
import { FrameType, readFrame, StrictReader, writeFrame } from '../src/shared/wire.js'

class HandshakeTimeout extends Error {}

export interface RoomHandlers {
  /** Clock units the relay acknowledged (✓) in this room. */
  onAck?: (clocks: number) => void
  /** Messages (envelopes: clocks of rows) delivered to this device from other devices. */
  onRows?: (messages: number) => void
  /** Every room message as it came (the lean devices of latency-floor.ts read the rows themselves). */
  onMessage?: (message: Uint8Array) => void
}

export class PetrelDevice {
  readonly user = generateSigningKeyPair()
  readonly device = generateSigningKeyPair()
  readonly agreement = generateAgreementKeyPair()
  certificate!: Uint8Array
  ws!: WebSocket
  private readonly opened = new Map<string, { resolve: () => void; reject: (e: Error) => void }>()
  private readonly handlers = new Map<string, RoomHandlers>()
  /** Outer client id per room, and the next clock. */
  private readonly clients = new Map<string, { doc: Y.Doc; next: number }>()

  /**
   * Connects and authenticates; a handshake that has not finished after `timeoutMs` is tried
   * once more on a new socket and said so on stderr (one of 10,000 once hung a whole run), and
   * fails the run if it hangs again.
   */
  static async connect(url: string, timeoutMs = 20_000): Promise<PetrelDevice> {
    try {
      return await PetrelDevice.connectOnce(url, timeoutMs)
    } catch (err) {
      if (!(err instanceof HandshakeTimeout)) throw err
      console.error(`petrel-device: ${err.message}; trying once more`)
      return PetrelDevice.connectOnce(url, timeoutMs)
    }
  }

  private static async connectOnce(url: string, timeoutMs: number): Promise<PetrelDevice> {
    const d = new PetrelDevice()
    const payload = certificatePayload(d.user.publicKey, d.device.publicKey, d.agreement.publicKey, Date.now())
    d.certificate = encodeCertificate(payload, await signWithDomain(SignatureDomain.DeviceCertificate, d.user.secretKey, payload))
    d.ws = new WebSocket(url, { perMessageDeflate: false })
    d.ws.binaryType = 'nodebuffer'
    let timer: ReturnType<typeof setTimeout> | undefined
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => {
        d.ws.terminate()
        reject(new HandshakeTimeout(`no Ready from the relay ${timeoutMs} ms after connecting (state ${d.ws.readyState})`))
      }, timeoutMs)
      d.ws.once('error', reject)
      d.ws.on('close', (code, reason) => reject(new Error(`closed ${code} ${reason.toString()}`)))
      d.ws.on('message', (data: Buffer) => {
        const frame = readFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
        if (frame.type === FrameType.Hello) {
          void signWithDomain(SignatureDomain.ConnectChallenge, d.device.secretKey, frame.challenge).then((signature) =>
            d.ws.send(writeFrame({ type: FrameType.Auth, certificate: d.certificate, signature })),
          )
        } else if (frame.type === FrameType.Ready) resolve()
        else if (frame.type === FrameType.Opened) d.opened.get(frame.room)?.resolve()
        else if (frame.type === FrameType.Denied) d.opened.get(frame.room)?.reject(new Error(`denied ${frame.room}: ${frame.message}`))
        else if (frame.type === FrameType.Room) d.onRoomMessage(frame.room, frame.message)
        // A lean device acts on none of these, but a benchmark that stalls should say it got one.
        else if (frame.type === FrameType.Notice) console.error(`petrel-device: the relay's notice ${frame.reason}: ${frame.message}`)
      })
    }).finally(() => clearTimeout(timer))
    return d
  }

  private onRoomMessage(room: string, message: Uint8Array): void {
    const h = this.handlers.get(room)
    if (!h) return
    h.onMessage?.(message)
    if (message[0] === RoomMessage.Ack && h.onAck) {
      const r = new StrictReader(message)
      r.pos = 1
      r.varUint()
      const n = r.varUint()
      let clocks = 0
      for (let i = 0; i < n; i++) {
        r.varUint()
        r.varUint()
        clocks += r.varUint()
      }
      h.onAck(clocks)
    } else if (message[0] === RoomMessage.Rows && h.onRows) {
      // A row may hold several updates (the relay merges a pipelined run): count clocks, one
      // envelope — one message — each.
      const r = new StrictReader(message)
      r.pos = 1
      const n = r.varUint()
      let clocks = 0
      for (let i = 0; i < n; i++) {
        r.varUint()
        r.varUint()
        r.varUint()
        clocks += r.varUint()
      }
      h.onRows(clocks)
    }
  }

  private open(room: string, admission: Uint8Array, handlers: RoomHandlers): Promise<void> {
    this.handlers.set(room, handlers)
    const done = new Promise<void>((resolve, reject) => this.opened.set(room, { resolve, reject }))
    this.ws.send(writeFrame({ type: FrameType.Open, room, admission }))
    // Sync step 1 with an empty state vector: catch up, then go live (rows flow from then on).
    this.ws.send(writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Step1, Uint8Array.of(0)) }))
    return done
  }

  /** Create a room (genesis record signed by this device); resolves once the relay opened it. */
  async createRoom(handlers: RoomHandlers = {}): Promise<string> {
    const nonce = randomBytes(16)
    const room = roomIdFor(nonce, this.user.publicKey)
    const body = encodeGenesisBody({ room, nonce, createdAt: Date.now() })
    const sig = await signWithDomain(SignatureDomain.Genesis, this.device.secretKey, recordSigningPayload(RecordKind.Genesis, body))
    const genesis = encodeRecord(RecordKind.Genesis, body, this.certificate, sig)
    await this.open(room, encodeAdmission({ kind: AdmissionKind.Genesis, genesis }), handlers)
    return room
  }

  /** Join a room with an invite token made by a real client (`conv.invite()`). */
  async join(token: string, handlers: RoomHandlers = {}): Promise<string> {
    const invite = decodeInviteToken(token)
    const inv = readInviteBody(readRecord(invite.inviteRecord).body)
    const body = encodeJoinBody({ room: invite.room, invitePub: inv.invitePub, joiner: this.certificate, joinedAt: Date.now() })
    const sig = await signWithDomain(SignatureDomain.Join, invite.inviteSecret, recordSigningPayload(RecordKind.Join, body))
    const join = encodeRecord(RecordKind.Join, body, new Uint8Array(0), sig)
    await this.open(invite.room, encodeAdmission({ kind: AdmissionKind.Join, invite: invite.inviteRecord, join }), handlers)
    return invite.room
  }

  /**
   * Seal `count` envelopes of `bytes` bytes each (epoch 0) and frame them as outer updates,
   * one frame per message, ready to send.
   */
  async sealFrames(room: string, count: number, bytes: number, key: Uint8Array = randomKey()): Promise<Uint8Array[]> {
    let c = this.clients.get(room)
    if (!c) {
      const doc = new Y.Doc()
      c = { doc, next: 0 }
      this.clients.set(room, c)
    }
    const frames: Uint8Array[] = []
    const log = c.doc.getMap<Uint8Array>('log')
    const capture = (u: Uint8Array) => frames.push(writeFrame({ type: FrameType.Room, room, message: writeSyncMessage(SyncStep.Update, u) }))
    c.doc.on('update', capture)
    try {
      for (let i = 0; i < count; i++) {
        const update = randomBytes(bytes)
        const envelope = await sealEnvelope({ room, epoch: 0, key, senderDevicePub: this.device.publicKey, senderDeviceSecret: this.device.secretKey, update })
        log.set(envelopeKey(c.doc.clientID, c.next++), envelope)
      }
    } finally {
      c.doc.off('update', capture)
    }
    return frames
  }

  close(): void {
    this.ws.removeAllListeners('close')
    this.ws.on('close', () => {})
    this.ws.on('error', () => {})
    this.ws.terminate()
  }
}
