/**
 * `createClient`: a device's Petrel engine — identity, local storage, one connection to the
 * relay, and its conversations.
 *
 * @example
 * ```ts
 * import { createClient } from 'petrel/client'
 * const alice = await createClient({ relay: 'ws://127.0.0.1:8787', name: 'Alice', storage: './alice.db' })
 * const conv = await alice.createConversation({ title: 'Trip' })
 * await conv.send('hello')
 * ```
 */
import { randomBytes, randomKey, SignatureDomain, signWithDomain } from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import {
  AdmissionKind,
  domainOf,
  encodeAdmission,
  encodeGenesisBody,
  encodeJoinBody,
  encodeRecord,
  readInviteBody,
  readRecord,
  RecordKind,
  recordSigningPayload,
  roomIdFor,
} from '../shared/records.js'
import { acquireDeviceLock, type DeviceLock, type TabPolicy } from './device-lock.js'
import { type ConnectionEvents, type ConnectionState, DeviceConnection, type WebSocketCtor } from './connection.js'
import { Conversation, type ClientContext } from './conversation.js'
import { decodeConversationRecord, encodeConversationRecord, keyOf } from './conversation-record.js'
import { Emitter } from './emitter.js'
import { type Identity, loadOrCreateIdentity } from './identity.js'
import { INNER_META, INNER_PROFILES } from './inner-guard.js'
import { decodeInviteToken } from './invite-token.js'
import type { DeviceStore } from './storage/device-store.js'
import { openDeviceStore } from './storage/open-store.js'

export interface ClientOptions {
  /** Relay URL, or several nodes of one relay cluster to fail over between. */
  relay: string | string[]
  /** Display name, seen only by conversation members (it travels encrypted). */
  name?: string
  /** Namespace of local data, so clients sharing one browser or process keep apart. */
  storageKey?: string
  /** Node: a SQLite file path (durable). Default: IndexedDB. A DeviceStore may be passed too. */
  storage?: string | DeviceStore
  /** WebSocket constructor; default globalThis.WebSocket, else the `ws` package on Node. */
  WebSocket?: unknown
  /** false: send no read receipts and see none from others (default true). */
  readReceipts?: boolean
  /**
   * Start a new key epoch after this many messages or this long (default 1,000 messages or
   * 7 days), so a leaked key exposes a bounded window. Old keys are kept to read old messages.
   */
  keyRotation?: { messages?: number; ms?: number }
  /**
   * Browsers: what to do when another tab of this profile already runs Petrel on the same
   * `storageKey` (only one engine may own a device's storage). `'fail'` (default) rejects
   * with `device_in_use`; `'wait'` waits until that tab closes; `'take-over'` asks it to
   * close (it gets the `displaced` event) and then opens here. Ignored where there are no Web Locks.
   */
  tabs?: TabPolicy
}

interface ClientEvents extends ConnectionEvents {
  /** Another tab took this device over (`tabs: 'take-over'`); this client has closed. */
  displaced: () => void
}

export class PetrelClient {
  private readonly events = new Emitter<ClientEvents>()
  private readonly convs = new Map<string, Conversation>()
  private readonly link: DeviceConnection
  private closed = false
  private lock: DeviceLock | undefined

  private constructor(
    private readonly identity: Identity,
    private readonly store: DeviceStore,
    WS: WebSocketCtor,
    urls: string[],
    private readonly name: string | undefined,
    private readonly readReceipts: boolean,
    private readonly keyRotation: { messages: number; ms: number },
  ) {
    this.link = new DeviceConnection(urls, identity, WS, this.events as unknown as Emitter<ConnectionEvents>)
  }

  static async create(options: ClientOptions): Promise<PetrelClient> {
    const urls = (Array.isArray(options.relay) ? options.relay : [options.relay]).filter((u) => typeof u === 'string' && u.length > 0)
    if (urls.length === 0) throw new PetrelError(ErrorCode.InvalidArgument, '`relay` must be a ws:// or wss:// URL (or a list of them)')
    for (const u of urls) if (!/^wss?:\/\//.test(u)) throw new PetrelError(ErrorCode.InvalidArgument, `relay URL must start with ws:// or wss://: ${u}`)
    const WS = (options.WebSocket ?? (globalThis as { WebSocket?: unknown }).WebSocket ?? (await import('ws')).WebSocket) as WebSocketCtor
    // The lock comes before the store: even creating the identity must happen in one tab only.
    let displaced: (() => void) | undefined
    const lock =
      typeof options.storage === 'object' ? undefined : await acquireDeviceLock(options.storageKey ?? 'default', options.tabs ?? 'fail', () => displaced?.())
    let client: PetrelClient
    try {
      const store = await openDeviceStore({ storage: options.storage, storageKey: options.storageKey })
      const identity = await loadOrCreateIdentity(store)
      client = new PetrelClient(identity, store, WS, urls, options.name, options.readReceipts !== false, {
        messages: options.keyRotation?.messages ?? 1_000,
        ms: options.keyRotation?.ms ?? 7 * 24 * 3_600_000,
      })
    } catch (err) {
      lock?.release()
      throw err
    }
    client.lock = lock
    displaced = () => void client.shutdown(true)
    // Opened side by side: each open waits on storage and on native signature checks, which
    // run off the main thread, so one after another would mostly wait.
    try {
      const stored = await client.store.list('conv:')
      const opened = await Promise.all(stored.map(([key, value]) => Conversation.open(client.context(), key.slice('conv:'.length), decodeConversationRecord(value))))
      for (const conv of opened) client.convs.set(conv.id, conv)
    } catch (err) {
      // Nothing half-open stays behind: the storage and the tab lock are given back.
      await client.close().catch(() => undefined)
      throw err
    }
    return client
  }

  /** Stable across restarts on the same storage. */
  get deviceId(): string {
    return this.identity.deviceId
  }

  /** The person's identity key (it signs their device list). */
  get userId(): string {
    return this.identity.userId
  }

  /** 'online' | 'connecting' | 'offline'; the `connection` event reports each change. */
  get connection(): ConnectionState {
    return this.link.state
  }

  on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): () => void {
    return this.events.on(event, listener)
  }

  private context(): ClientContext {
    return {
      identity: this.identity,
      store: this.store,
      connection: this.link,
      signRecord: (kind, body) => this.signRecord(kind, body),
      readReceipts: this.readReceipts,
      keyRotation: this.keyRotation,
      name: this.name,
      reportError: (err) => this.events.emit('error', err),
    }
  }

  /** Create a conversation; works offline (it reaches the relay with the first connection). */
  async createConversation(options: { title?: string } = {}): Promise<Conversation> {
    this.assertOpen()
    const nonce = randomBytes(16)
    const room = roomIdFor(nonce, this.identity.userPub)
    const body = encodeGenesisBody({ room, nonce, createdAt: Date.now() })
    const genesis = await this.signRecord(RecordKind.Genesis, body)
    const record = {
      createdAt: Date.now(),
      admission: encodeAdmission({ kind: AdmissionKind.Genesis, genesis }),
      keys: new Map([[0, randomKey()]]),
    }
    await this.store.commit({ put: [[keyOf.conv(room), encodeConversationRecord(record)]] })
    const conv = await Conversation.open(this.context(), room, record)
    this.convs.set(room, conv)
    await conv.writeRecords([genesis])
    await conv.setInner((doc) => {
      if (options.title) doc.getMap(INNER_META).set('title', options.title)
      doc.getMap(INNER_PROFILES).set(this.identity.userId, { name: this.name ?? '' })
    })
    return conv
  }

  /**
   * Join a conversation from an invite. Resolves once the relay admitted this device and the
   * history arrived (or at once when offline: the join completes on the next connection).
   */
  async join(token: string): Promise<Conversation> {
    this.assertOpen()
    const invite = decodeInviteToken(token)
    const existing = this.convs.get(invite.room)
    if (existing) return existing
    const inviteRec = readRecord(invite.inviteRecord)
    if (inviteRec.kind !== RecordKind.Invite) throw new PetrelError(ErrorCode.InviteInvalid, 'invite carries no invite record')
    const inv = readInviteBody(inviteRec.body)
    if (inv.room !== invite.room) throw new PetrelError(ErrorCode.InviteInvalid, 'invite record is for another conversation')
    if (inv.expiresAt !== 0 && Date.now() > inv.expiresAt) throw new PetrelError(ErrorCode.InviteInvalid, 'invite has expired')
    const joinBody = encodeJoinBody({ room: invite.room, invitePub: inv.invitePub, joiner: this.identity.certificate.bytes, joinedAt: Date.now() })
    const join = encodeRecord(
      RecordKind.Join,
      joinBody,
      new Uint8Array(0),
      await signWithDomain(SignatureDomain.Join, invite.inviteSecret, recordSigningPayload(RecordKind.Join, joinBody)),
    )
    const record = {
      createdAt: Date.now(),
      admission: encodeAdmission({ kind: AdmissionKind.Join, invite: invite.inviteRecord, join }),
      keys: invite.keys,
    }
    await this.store.commit({ put: [[keyOf.conv(invite.room), encodeConversationRecord(record)]] })
    const conv = await Conversation.open(this.context(), invite.room, record)
    this.convs.set(invite.room, conv)
    await conv.writeRecords([invite.inviteRecord, join])
    if (this.link.state !== 'offline') {
      try {
        await conv.whenSynced(15_000)
      } catch (err) {
        await this.forget(conv)
        throw err
      }
    }
    await conv.setInner((doc) => doc.getMap(INNER_PROFILES).set(this.identity.userId, { name: this.name ?? '' }))
    return conv
  }

  private async forget(conv: Conversation): Promise<void> {
    this.convs.delete(conv.id)
    await conv.close()
    await this.store.commit({ put: [[keyOf.conv(conv.id), null]] })
  }

  /** Every conversation on this device, also after a restart. */
  async conversations(): Promise<Conversation[]> {
    return [...this.convs.values()]
  }

  /** Airplane mode: close the connection and stay offline until `connect()`. */
  disconnect(): void {
    this.link.disconnect()
  }

  connect(): void {
    this.link.connect()
  }

  close(): Promise<void> {
    return this.shutdown(false)
  }

  private async shutdown(displaced: boolean): Promise<void> {
    if (this.closed) return
    this.closed = true
    // Conversations first: they flush what is queued (acknowledgements) while the socket is up.
    await Promise.all([...this.convs.values()].map((c) => c.close()))
    this.link.close()
    await this.store.close()
    this.lock?.release()
    if (displaced) this.events.emit('displaced')
    this.events.clear()
  }

  private async signRecord(kind: RecordKind, body: Uint8Array): Promise<Uint8Array> {
    const domain = domainOf(kind)
    const sig = await signWithDomain(domain, this.identity.deviceSecret, recordSigningPayload(kind, body))
    return encodeRecord(kind, body, this.identity.certificate.bytes, sig)
  }

  private assertOpen(): void {
    if (this.closed) throw new PetrelError(ErrorCode.Closed, 'client is closed')
  }
}

