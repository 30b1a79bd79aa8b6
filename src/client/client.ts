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
import { fromBase64Url, randomBytes, randomKey, SignatureDomain, signWithDomain, toBase64Url } from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { MAX_MEMBER_DEVICES } from '../shared/membership.js'
import {
  AdmissionKind,
  certificatePayload,
  type DeviceCertificate,
  domainOf,
  encodeCertificate,
  readCertificate,
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
import type { ClientContext } from './client-context.js'
import { Conversation } from './conversation.js'
import { type ConversationRecord, conversationEntries, decodeConversationRecord, encodeConversationRecord, keyOf } from './conversation-record.js'
import { Emitter } from './emitter.js'
import { DeviceBook } from './device-book.js'
import { encodeAnswer, encodeLinkPayload, LINK_TTL_MS, LinkMailbox, LinkSlot, newLinkSecret, openLinkMessage, readOffer, sealLinkMessage } from './device-link.js'
import { hasIdentity, type Identity, loadOrCreateIdentity, NAME_KEY } from './identity.js'
import { linkAsNewDevice } from './link-new-device.js'
import { assertName, assertTitle } from './restated-context.js'
import { encodePublicIdentity } from './public-identity.js'
import { decodeRelayLimits, encodeRelayLimits, RELAY_LIMITS_KEY } from './relay-limits.js'
import { decodeSummary, STALE_SUMMARY_PREFIX, SUMMARY_PREFIX, type Summary, staleSummaryKey, summaryKey } from './summary.js'
import { INNER_META, INNER_PROFILES } from './inner-guard.js'
import { decodeInviteToken } from './invite-token.js'
import type { CompactOp, DeviceStore } from './storage/device-store.js'
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
  /**
   * History compaction: after `every` messages and other updates (default 5,000; sends made
   * together share an envelope, so this counts what was written, not relay rows) the device whose message
   * crosses the mark seals a snapshot of the conversation, and the relay replaces the rows it
   * covers by placeholders once every member device has them — so a conversation's bytes on
   * the relay stop growing with its age, and a new device downloads one snapshot and the
   * tail. Later snapshots wait until the history grew by half since the last, and take at
   * most a fifth of the time (snapshot-schedule.ts). `false` turns it off on this device.
   */
  compaction?: { every?: number } | false
  /**
   * `'all'` (default): `createClient` resolves once every stored conversation is loaded, and
   * `messages()` always holds every message. `'lazy'`: it resolves at once; a conversation
   * answers from a stored summary (title, unread count, its last 50 messages) until its
   * documents have loaded in the background (`conv.ready()`, `conv.loaded`; subscribers hear
   * when) — WhatsApp's instant chat list. A summary is used only when nothing changed after it
   * was stored; otherwise that conversation loads before `createClient` resolves.
   */
  open?: 'all' | 'lazy'
  /**
   * A device link from `client.linkDevice()` on another device of the same person: on first
   * start, this device becomes one of theirs (same identity, every conversation with its
   * history). `create` resolves once the other device answered. Ignored once linked.
   */
  link?: string
  /**
   * Cancels a link in progress (`link`): `createClient` rejects with `link_failed` ("cancelled")
   * at once, instead of waiting up to the link's expiry and 30 s more for the other device.
   * Started again with the same link, the device takes up where it stopped.
   *
   * @example
   * ```ts
   * const stop = new AbortController()
   * cancelButton.onclick = () => stop.abort()
   * const laptop = await createClient({ relay, storage: './laptop.db', link, signal: stop.signal })
   * ```
   */
  signal?: AbortSignal
}

interface ClientEvents extends ConnectionEvents {
  /** Another tab took this device over (`tabs: 'take-over'`); this client has closed. */
  displaced: () => void
  /** A conversation appeared on this device without a call here: added by an admin, or by another device of this person. */
  conversation: (conv: Conversation) => void
  /** A device was linked from this one (`linkDevice`). */
  deviceLinked: (deviceId: string) => void
}

/** A conversation stored on this device whose stored record could not be read back. */
export interface UnreadableConversation {
  id: string
  /** Why: a `malformed` error naming what was wrong. */
  error: PetrelError
}

/** One of a person's devices, as `client.devices()` lists them. */
export interface DeviceInfo {
  id: string
  /** When its certificate was made (ms since epoch). */
  createdAt: number
  /** This device. */
  current: boolean
  /** Holds the identity key (it can link devices). */
  primary: boolean
}

export class PetrelClient {
  private readonly events = new Emitter<ClientEvents>()
  private readonly convs = new Map<string, Conversation>()
  /** Stored conversations whose record was corrupt at start: left out, and left in storage. */
  private readonly unreadable = new Map<string, PetrelError>()
  private readonly discovering = new Set<string>()
  private readonly reconciling = new Set<string>()
  private readonly linkAborts = new Set<AbortController>()
  /** Settles once the conversations stored on this device are open. */
  private started: Promise<void>
  private markStarted: () => void = () => {}
  private readonly link: DeviceConnection
  private closed = false
  private lock: DeviceLock | undefined

  private constructor(
    private readonly identity: Identity,
    private readonly store: DeviceStore,
    private readonly deviceBook: DeviceBook,
    WS: WebSocketCtor,
    private readonly urls: string[],
    private readonly name: string | undefined,
    private readonly readReceipts: boolean,
    private readonly keyRotation: { messages: number; ms: number },
    private readonly compactEvery: number,
    private readonly lazy: boolean,
  ) {
    this.link = new DeviceConnection(urls, identity, WS, this.events as unknown as Emitter<ConnectionEvents>)
    this.started = new Promise((resolve) => {
      this.markStarted = resolve
    })
    this.link.onRooms = (rooms) => void this.discover(rooms).catch((err) => this.reportError(err))
  }

  /**
   * Sends are sealed against the relay's limits (what may share an envelope, how long a message
   * may be). Until this run's first hello they are the ones the relay last advertised, not the
   * defaults: an outbox filled offline after a restart must fit a relay that allows less.
   */
  private async rememberRelayLimits(): Promise<void> {
    const stored = await this.store.get(RELAY_LIMITS_KEY)
    if (stored) {
      try {
        const limits = decodeRelayLimits(stored)
        this.link.maxFrameBytes = limits.maxFrameBytes
        this.link.maxEnvelopeBytes = limits.maxEnvelopeBytes
      } catch {
        // A damaged or newer entry: the defaults stand until the next hello rewrites it.
      }
    }
    let last = stored
    this.link.onLimits = (maxFrameBytes, maxEnvelopeBytes) => {
      const bytes = encodeRelayLimits({ maxFrameBytes, maxEnvelopeBytes })
      if (last && bytes.length === last.length && bytes.every((b, i) => b === last![i])) return
      last = bytes
      void this.store.commit({ put: [[RELAY_LIMITS_KEY, bytes]] }).catch((err) => this.reportError(err))
    }
  }

  static async create(options: ClientOptions): Promise<PetrelClient> {
    const urls = (Array.isArray(options.relay) ? options.relay : [options.relay]).filter((u) => typeof u === 'string' && u.length > 0)
    if (urls.length === 0) throw new PetrelError(ErrorCode.InvalidArgument, '`relay` must be a ws:// or wss:// URL (or a list of them)')
    for (const u of urls) if (!/^wss?:\/\//.test(u)) throw new PetrelError(ErrorCode.InvalidArgument, `relay URL must start with ws:// or wss://: ${u}`)
    // Checked, not coerced: `every: 0` quietly turned compaction off, and `open: 'fast'` meant 'all'.
    const every = options.compaction === false ? undefined : options.compaction?.every
    if (every !== undefined && !(Number.isSafeInteger(every) && every > 0)) throw new PetrelError(ErrorCode.InvalidArgument, 'compaction.every must be a whole number above 0 (or compaction: false)')
    if (options.open !== undefined && options.open !== 'all' && options.open !== 'lazy') throw new PetrelError(ErrorCode.InvalidArgument, "open must be 'all' or 'lazy'")
    // Said in every conversation joined (`sayName`): refused there, every join would fail.
    if (options.name !== undefined) assertName(options.name)
    const rotation = options.keyRotation
    for (const [what, n] of [['keyRotation.messages', rotation?.messages], ['keyRotation.ms', rotation?.ms]] as const) {
      if (n !== undefined && !(Number.isSafeInteger(n) && n > 0)) throw new PetrelError(ErrorCode.InvalidArgument, `${what} must be a whole number above 0`)
    }
    const WS = (options.WebSocket ?? (globalThis as { WebSocket?: unknown }).WebSocket ?? (await import('ws')).WebSocket) as WebSocketCtor
    // The lock comes before the store: even creating the identity must happen in one tab only.
    let displaced: (() => void) | undefined
    const lock =
      typeof options.storage === 'object' ? undefined : await acquireDeviceLock(options.storageKey ?? 'default', options.tabs ?? 'fail', () => displaced?.())
    let client: PetrelClient
    try {
      const store = await openDeviceStore({ storage: options.storage, storageKey: options.storageKey })
      try {
        let siblings: DeviceCertificate[] = []
        let identity: Identity
        let linkedName: string | undefined
        let primary: string | undefined
        if (options.link && !(await hasIdentity(store))) {
          const linked = await linkAsNewDevice(store, urls, options.link, options.signal)
          ;({ identity, siblings, primary } = linked)
          linkedName = linked.name || undefined
        } else identity = await loadOrCreateIdentity(store)
        // The person's name as the link carried it (stored with the identity), for starts without `name`.
        if (!linkedName && options.name === undefined) {
          const stored = await store.get(NAME_KEY)
          if (stored) linkedName = new TextDecoder().decode(stored)
        }
        const devices = await DeviceBook.load(store, identity.certificate)
        for (const cert of siblings) devices.learn(cert)
        if (identity.userSecret) devices.primary = identity.deviceId
        else if (primary) devices.primary = primary
        if (siblings.length > 0 || primary || identity.userSecret) await devices.save()
        client = new PetrelClient(identity, store, devices, WS, urls, options.name ?? linkedName, options.readReceipts !== false, {
          messages: options.keyRotation?.messages ?? 1_000,
          ms: options.keyRotation?.ms ?? 7 * 24 * 3_600_000,
        }, options.compaction === false ? 0 : (options.compaction?.every ?? 5_000), options.open === 'lazy')
      } catch (err) {
        await store.close().catch(() => undefined)
        throw err
      }
    } catch (err) {
      lock?.release()
      throw err
    }
    client.lock = lock
    displaced = () => void client.shutdown(true)
    await client.rememberRelayLimits()
    // Opened side by side: each open waits on storage and on native signature checks, which
    // run off the main thread, so one after another would mostly wait.
    try {
      const stored = await client.store.list('conv:')
      // Range reads for every summary, stale mark and writer-ids entry, not point reads a
      // conversation: 2,000 of those were 27 ms of a lazy start with 1,000 conversations
      // (benchmark 6).
      const [summaries, staleMarks, writers] = await Promise.all([
        client.lazy ? client.store.list(SUMMARY_PREFIX) : [],
        client.lazy ? client.store.list(STALE_SUMMARY_PREFIX) : [],
        client.store.list(keyOf.writerIds('')),
      ])
      const summaryBytes = new Map(summaries.map(([key, value]) => [key.slice(SUMMARY_PREFIX.length), value]))
      const writerIds = new Map(writers.map(([key, value]) => [key.slice(keyOf.writerIds('').length), value]))
      const staleIds = new Set(staleMarks.map(([key]) => key.slice(STALE_SUMMARY_PREFIX.length)))
      const lazy: Conversation[] = []
      // A conversation with a summary answers from it and loads in the background; one without
      // (first start after an upgrade) loads now, so nothing shows up empty.
      const opened = await Promise.all(
        stored.map(async ([key, value]) => {
          const id = key.slice('conv:'.length)
          // One conversation stored corrupt (or by a newer version) must not keep the device
          // from every other: it is left out, said, and left in storage as it is.
          const unreadable = (err: unknown): undefined => {
            if (!client.noteUnreadable(id, err)) throw err
            return undefined
          }
          let record: ConversationRecord
          try {
            record = decodeConversationRecord(value)
          } catch (err) {
            return unreadable(err)
          }
          const bytes = summaryBytes.get(id)
          let summary: Summary | undefined
          try {
            summary = bytes && !staleIds.has(id) ? decodeSummary(bytes, id) : undefined
          } catch {
            summary = undefined
          }
          if (!summary || !client.lazy) return Conversation.open(client.context(), id, record, writerIds.get(id) ?? null).catch(unreadable)
          const conv = Conversation.lazy(client.context(), id, record, summary, writerIds.get(id) ?? null)
          lazy.push(conv)
          return conv
        }),
      )
      for (const conv of opened) if (conv) client.convs.set(conv.id, conv)
      client.markStarted()
      // After the app has had the client and subscribed: told now, nobody would hear it.
      if (client.unreadable.size > 0) setTimeout(() => {
        for (const err of client.unreadable.values()) client.reportError(err)
      }, 0)
      client.loadInBackground(lazy)
    } catch (err) {
      client.markStarted()
      // Nothing half-open stays behind: the storage and the tab lock are given back.
      await client.close().catch(() => undefined)
      throw err
    }
    return client
  }

  /** Conversations whose summary is behind, stored together every two seconds (one timer). */
  private readonly dirtySummaries = new Set<Conversation>()
  private summaryTimer: ReturnType<typeof setTimeout> | undefined

  private summaryDirty(conv: Conversation): void {
    this.dirtySummaries.add(conv)
    this.summaryTimer ??= setTimeout(() => {
      this.summaryTimer = undefined
      const convs = [...this.dirtySummaries]
      this.dirtySummaries.clear()
      for (const c of convs) void c.saveSummary()
    }, 2000)
  }

  /**
   * Load conversations that started from their summaries, latest activity first, two at a
   * time: storage and native signature checks run off the main thread, so two overlap well
   * and more would only queue.
   */
  private loadInBackground(convs: Conversation[]): void {
    const queue = [...convs].sort((a, b) => (b.messages().at(-1)?.sentAt ?? 0) - (a.messages().at(-1)?.sentAt ?? 0))
    const worker = async () => {
      for (let conv = queue.shift(); conv && !this.closed; conv = queue.shift()) {
        await conv.ready().catch((err) => this.loadFailed(conv, err))
      }
    }
    void worker()
    void worker()
  }

  /**
   * A conversation is unreadable when what is stored of it is corrupt, or from a newer version:
   * noted (true) so it is left out; any other failure (false) is the caller's to handle.
   */
  private noteUnreadable(id: string, err: unknown): boolean {
    if (!(err instanceof PetrelError) || (err.code !== ErrorCode.Malformed && err.code !== ErrorCode.VersionMismatch)) return false
    this.unreadable.set(id, new PetrelError(err.code, `conversation ${id} could not be read back: ${err.message}`, { cause: err, conversationId: id }))
    return true
  }

  /**
   * A conversation that started from its summary could not be read back in the background: it
   * leaves `conversations()` for `unreadableConversations()`, as it would have at an eager
   * start, and the app hears it once. Its storage stays as it is. A passing failure (the disk
   * busy, a read error) only reports: the next call on it loads it again.
   */
  private loadFailed(conv: Conversation, err: unknown): void {
    if (this.closed || this.convs.get(conv.id) !== conv || !this.noteUnreadable(conv.id, err)) {
      this.reportError(err)
      return
    }
    this.convs.delete(conv.id)
    this.dirtySummaries.delete(conv)
    this.reportError(this.unreadable.get(conv.id)!)
    void conv.close().catch(() => undefined)
  }

  /**
   * The name this device gives its person in conversations: the `name` option, or on a linked
   * device started without one, the name its link carried. An app linking a device need not ask
   * for a name (given, it renames the person everywhere).
   *
   * @example
   * ```ts
   * const laptop = await createClient({ relay, storage: './laptop.db', link: payload })
   * laptop.displayName // 'Alice', as the first device calls her
   * ```
   */
  get displayName(): string | undefined {
    return this.name
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

  /**
   * Listen to the client's events (`connection`, `error`, `conversation`, `deviceLinked`,
   * `displaced`); returns the function that stops listening.
   *
   * @example
   * ```ts
   * const off = client.on('error', (err) => console.warn(err.code, err.message))
   * ```
   */
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
      membershipChanged: (conv) => this.reconcileDevices(conv),
      compactEvery: this.compactEvery,
      ...(this.lazy ? { summaryDirty: (conv: Conversation) => this.summaryDirty(conv) } : {}),
    }
  }

  private reportError(err: unknown): void {
    this.events.emit('error', err instanceof PetrelError ? err : new PetrelError(ErrorCode.Refused, String(err), { cause: err }))
  }

  /**
   * Conversations the relay says this device is in but it does not have yet (an admin added
   * its person, or another of its person's devices brought it in): open them. The keys come
   * with the add record, in the conversation's own log.
   */
  private async discover(rooms: string[]): Promise<void> {
    // The relay may answer before the stored conversations are open: those are not news.
    await this.started
    for (const room of rooms) {
      const existing = this.convs.get(room)
      // One held refused for good (removed, say) that the relay lists again: its person was
      // added back (addMember). It opens anew, keeping its keys; before, it stayed refused
      // until the app restarted.
      // Refused by this device's records only (a leave made offline), the relay's listing may
      // predate the leave: not an add back until the relay refused it too.
      if (this.closed || (existing && !existing.deniedByRelay) || this.discovering.has(room)) continue
      this.discovering.add(room)
      try {
        if (!existing && (await this.store.get(keyOf.conv(room)))) continue
        const heldKeys = existing ? await this.giveUpRefused(existing) : undefined
        const record = { createdAt: Date.now(), admission: encodeAdmission({ kind: AdmissionKind.None }), keys: heldKeys ?? new Map<number, Uint8Array>() }
        await this.store.commit({ put: [[keyOf.conv(room), encodeConversationRecord(record)]] })
        if (this.closed) return
        const conv = await Conversation.open(this.context(), room, record)
        this.convs.set(room, conv)
        this.events.emit('conversation', conv)
        // Our name, once we can write (the add record with our keys arrives with the first sync).
        void conv
          .sayName(this.name ?? '')
          .catch((err) => this.reportError(err))
      } finally {
        this.discovering.delete(room)
      }
    }
  }

  /**
   * Keep this person's devices in step in one conversation: learn siblings found there, bring
   * in the ones missing, take out the unlinked ones. Any device of the person may do it; two
   * doing it at once is harmless (an add of a present device changes nothing).
   */
  private reconcileDevices(conv: Conversation): void {
    if (this.closed) return
    const st = conv.membershipState
    const mine = st.members.get(this.identity.userId)
    if (!mine?.devices.has(this.identity.deviceId)) return
    let learned = false
    for (const cert of mine.devices.values()) learned = this.deviceBook.learn(cert) || learned
    // Only an unlink this person signed counts for all their conversations (an admin's counts
    // in that conversation alone); the first device is never unlinked this way.
    for (const [id, by] of st.removedDevices) if (by === this.identity.userId && id !== this.deviceBook.primary) learned = this.deviceBook.unlink(id) || learned
    if (learned) void this.deviceBook.save().catch((err) => this.reportError(err))
    const missing = this.deviceBook.current().filter((c) => {
      const id = toBase64Url(c.devicePub)
      return !st.devices.has(id) && !st.removedDevices.has(id)
    })
    const stale = [...mine.devices.keys()].filter((id) => this.deviceBook.isUnlinked(id))
    if (missing.length === 0 && stale.length === 0) return
    if (this.reconciling.has(conv.id)) return
    this.reconciling.add(conv.id)
    void (async () => {
      try {
        for (const id of stale) if (conv.membershipState.devices.has(id)) await conv.unlinkDevice(fromBase64Url(id))
        // Never past the relay's cap for one person (linkDevice refuses a link beyond it).
        const room = MAX_MEMBER_DEVICES - (conv.membershipState.members.get(this.identity.userId)?.devices.size ?? 0)
        const still = missing.filter((c) => !conv.membershipState.devices.has(toBase64Url(c.devicePub))).slice(0, Math.max(0, room))
        if (still.length > 0 && conv.keys().has(conv.epoch)) await conv.addDevices(this.identity.userPub, still)
      } catch (err) {
        this.reportError(err)
      } finally {
        this.reconciling.delete(conv.id)
      }
    })()
  }

  /**
   * Link a new device to this person: returns a payload to hand to the new device (as a link
   * or QR code) for `createClient({ …, link })`. It works once, for ten minutes by default;
   * the new device gets every conversation of this person, with history. Only the device that
   * holds the identity key (the first one) can link.
   *
   * @example
   * ```ts
   * const payload = await alice.linkDevice()
   * const laptop = await createClient({ relay, storage: './laptop.db', link: payload })
   * ```
   */
  async linkDevice(options: { expiresIn?: number } = {}): Promise<string> {
    this.assertOpen()
    const userSecret = this.identity.userSecret
    if (!userSecret) throw new PetrelError(ErrorCode.Refused, 'only the device that holds the identity key (the first one) can link devices')
    // Each conversation takes at most this many devices of one person (the relay's cap): a device
    // past it would be in none of them. Links still open count, as they may yet be taken.
    if (this.deviceBook.current().length + this.linkAborts.size >= MAX_MEMBER_DEVICES) {
      throw new PetrelError(ErrorCode.Refused, `a person links at most ${MAX_MEMBER_DEVICES} devices (this one counts, and links not yet taken): unlink one first`)
    }
    const expiresIn = options.expiresIn ?? LINK_TTL_MS
    // Infinity never finished encoding (and grew without end); NaN gave a link expired at once.
    if (!(Number.isSafeInteger(expiresIn) && expiresIn > 0)) throw new PetrelError(ErrorCode.InvalidArgument, 'expiresIn must be a whole number of milliseconds above 0')
    const link = newLinkSecret(expiresIn)
    const mailbox = new LinkMailbox(this.urls)
    const abort = new AbortController()
    this.linkAborts.add(abort)
    void (async () => {
      try {
        // The first offer that opens with the secret; anything else in the slot (someone who
        // guessed nothing, only the mailbox id) is taken out of the way and ignored.
        let plain: Uint8Array | undefined
        while (!plain) {
          const offerBytes = await mailbox.take(link.mailbox, LinkSlot.Offer, link.expiresAt, abort.signal)
          if (!offerBytes) return
          plain = openLinkMessage(link, LinkSlot.Offer, offerBytes)
        }
        // Past its time the new device no longer waits (beyond a grace for an answer begun
        // in time): a device certified now would be one nobody uses, in every conversation.
        if (Date.now() > link.expiresAt) return
        const offer = readOffer(plain)
        const payload = certificatePayload(this.identity.userPub, offer.devicePub, offer.agreementPub, Date.now())
        const certBytes = encodeCertificate(payload, await signWithDomain(SignatureDomain.DeviceCertificate, userSecret, payload))
        const cert = readCertificate(certBytes)
        this.deviceBook.learn(cert)
        await this.deviceBook.save()
        // Into every conversation first, so the relay lists them when the new device connects.
        await Promise.all([...this.convs.values()].map((c) => c.ready()))
        for (const conv of this.convs.values()) this.reconcileDevices(conv)
        const siblings = this.deviceBook.current().filter((c) => toBase64Url(c.devicePub) !== toBase64Url(cert.devicePub))
        const answer = encodeAnswer(certBytes, siblings, this.name ?? '', this.identity.deviceId)
        try {
          await mailbox.put(link.mailbox, LinkSlot.Answer, sealLinkMessage(link, LinkSlot.Answer, answer))
        } catch (err) {
          // The new device never gets its certificate: take back the device added for it.
          await this.removeDevice(toBase64Url(cert.devicePub)).catch(() => undefined)
          throw err
        }
        // The link is spent: whatever else offers on it (the QR code scanned again) is told so
        // (`409`, link_failed) instead of waiting for an answer until the link expires.
        await mailbox.put(link.mailbox, LinkSlot.Offer, randomBytes(32)).catch(() => undefined)
        this.events.emit('deviceLinked', toBase64Url(cert.devicePub))
      } catch (err) {
        if (!abort.signal.aborted) this.reportError(err)
      } finally {
        this.linkAborts.delete(abort)
      }
    })()
    return encodeLinkPayload(link)
  }

  /**
   * This person's devices as this device knows them (linked here, or seen in a shared
   * conversation), unlinked ones left out.
   *
   * @example
   * ```ts
   * for (const d of client.devices()) console.log(d.id, d.current ? '(this device)' : '')
   * ```
   */
  devices(): DeviceInfo[] {
    return this.deviceBook.current().map((c) => {
      const id = toBase64Url(c.devicePub)
      return { id, createdAt: c.createdAt, current: id === this.identity.deviceId, primary: id === this.deviceBook.primary }
    })
  }

  /**
   * Unlink another device of this person: it is taken out of every conversation (each starts
   * a new key epoch without it) and never comes back.
   *
   * @example
   * ```ts
   * await alice.removeDevice(lostPhoneId)
   * ```
   */
  async removeDevice(id: string): Promise<void> {
    this.assertOpen()
    if (id === this.identity.deviceId) throw new PetrelError(ErrorCode.InvalidArgument, 'unlink this device from another of your devices')
    if (!this.deviceBook.has(id)) throw new PetrelError(ErrorCode.NotFound, 'no such device of this person')
    if (id === this.deviceBook.primary) throw new PetrelError(ErrorCode.Refused, 'the first device (it holds the identity key) cannot be unlinked')
    this.deviceBook.unlink(id)
    await this.deviceBook.save()
    await Promise.all([...this.convs.values()].map((c) => c.ready()))
    const jobs: Promise<void>[] = []
    for (const conv of this.convs.values()) {
      const st = conv.membershipState
      if (st.devices.has(id) && st.devices.has(this.identity.deviceId)) jobs.push(conv.unlinkDevice(fromBase64Url(id)))
    }
    await Promise.all(jobs)
  }

  /**
   * This person's public identity (their device certificates): what an admin passes to
   * `conv.addMember` to add them without an invite. Public keys only.
   *
   * @example
   * ```ts
   * await conv.addMember(await bob.publicIdentity())
   * ```
   */
  async publicIdentity(): Promise<string> {
    return encodePublicIdentity(this.deviceBook.current())
  }

  /** Create a conversation; works offline (it reaches the relay with the first connection). */
  async createConversation(options: { title?: string } = {}): Promise<Conversation> {
    this.assertOpen()
    if (options.title !== undefined) assertTitle(options.title)
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
   * history arrived; in airplane mode at once, and while the relay cannot be reached after 15 s
   * (`conv.synced` false): the join completes on the next connection. Rejects with
   * `invite_invalid` when the relay refuses the invite.
   *
   * @example
   * ```ts
   * const conv = await client.join(location.hash.slice('#invite='.length))
   * ```
   */
  async join(token: string): Promise<Conversation> {
    this.assertOpen()
    const invite = decodeInviteToken(token)
    const existing = this.convs.get(invite.room)
    // Refused for good (removed, say) and invited again: it opens anew with the new admission,
    // keeping the keys it held (the new invite carries those of its own time).
    if (existing && existing.refusal === undefined) return existing
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
    // Only once the invite is known to be usable is the refused one given up: the keys it held
    // (in memory and as stored) go into the new record, so none is lost, whatever follows.
    const heldKeys = existing ? await this.giveUpRefused(existing) : undefined
    const record = {
      createdAt: Date.now(),
      admission: encodeAdmission({ kind: AdmissionKind.Join, invite: invite.inviteRecord, join }),
      keys: heldKeys ? new Map([...heldKeys, ...invite.keys]) : invite.keys,
    }
    const puts: Array<[string, Uint8Array]> = [[keyOf.conv(invite.room), encodeConversationRecord(record)]]
    // The unreadable record it replaces is kept aside, never lost: a later version may read it.
    const damaged = this.unreadable.has(invite.room) ? await this.store.get(keyOf.conv(invite.room)) : undefined
    if (damaged) puts.push([`damaged:${keyOf.conv(invite.room)}`, damaged])
    await this.store.commit({ put: puts })
    this.unreadable.delete(invite.room)
    const conv = await Conversation.open(this.context(), invite.room, record, undefined, true)
    this.convs.set(invite.room, conv)
    await conv.writeRecords([invite.inviteRecord, join])
    if (this.link.state !== 'offline') {
      try {
        await conv.whenSynced(15_000)
        conv.joinSettled()
      } catch (err) {
        // Left pending: what the relay still says of this join (its record refused) is said by this rejection.
        // Joining again what this device held: its history and keys stay stored (the next start
        // opens it, and says the refusal); a first join leaves nothing behind.
        if (existing) {
          this.convs.delete(conv.id)
          await conv.close()
        } else await this.forget(conv)
        throw err
      }
    }
    conv.joinSettled()
    await conv.sayName(this.name ?? '')
    return conv
  }

  /**
   * Close a conversation refused for good, to open it anew (a fresh invite, or added back):
   * returns the keys it held, in memory and as stored, so none is lost whatever follows.
   */
  private async giveUpRefused(existing: Conversation): Promise<Map<number, Uint8Array>> {
    const heldKeys = existing.keys()
    const stored = await this.store.get(keyOf.conv(existing.id))
    if (stored) {
      try {
        for (const [epoch, key] of decodeConversationRecord(stored).keys) if (!heldKeys.has(epoch)) heldKeys.set(epoch, key)
      } catch {
        // Unreadable as stored: the keys in memory are all there is.
      }
    }
    this.convs.delete(existing.id)
    this.dirtySummaries.delete(existing)
    await existing.close()
    return heldKeys
  }

  private async forget(conv: Conversation): Promise<void> {
    this.convs.delete(conv.id)
    this.dirtySummaries.delete(conv)
    await conv.close()
    // Everything of it: its logs too. Left behind, a later join of the same conversation loaded
    // them, and uploaded the refused join record again (the relay refused it again, an `error`).
    const { keys, prefixes } = conversationEntries(conv.id)
    const listed = await Promise.all(prefixes.map((prefix) => this.store.list(prefix)))
    const put: Array<[string, null]> = [...keys, summaryKey(conv.id), staleSummaryKey(conv.id), ...listed.flat().map(([key]) => key)].map((key) => [key, null])
    const compact: CompactOp[] = []
    for (const doc of ['inner', 'outer'] as const) {
      const rows = await this.store.loadLog(conv.id, doc)
      // One empty update stands in for them (a store keeps a merged row).
      if (rows.length > 0) compact.push({ convId: conv.id, doc, throughId: rows[rows.length - 1]!.id, merged: Uint8Array.of(0, 0) })
    }
    await this.store.commit({ put, compact })
  }

  /** Every conversation on this device, also after a restart. */
  async conversations(): Promise<Conversation[]> {
    return [...this.convs.values()]
  }

  /**
   * Conversations stored on this device that it could not read back (their stored record or
   * rows are corrupt: a damaged disk, a store edited by hand; or written by a newer version,
   * `version_mismatch`): at start, or, with `open: 'lazy'`, when one listed from its summary
   * loads in the background (it then leaves `conversations()`). They are left out of
   * `conversations()`, reported once on `error`, and left in storage as they were; joining
   * one again from an invite replaces its record (the old one is kept as `damaged:conv:{id}`).
   *
   * @example
   * ```ts
   * for (const { id, error } of client.unreadableConversations()) console.warn(id, error.message)
   * ```
   */
  unreadableConversations(): UnreadableConversation[] {
    return [...this.unreadable].map(([id, error]) => ({ id, error }))
  }

  /** Airplane mode: close the connection and stay offline until `connect()`. */
  disconnect(): void {
    this.link.disconnect()
  }

  /**
   * Leave airplane mode: connect again (and keep reconnecting, backing off, while the relay
   * cannot be reached). What waits in the outbox goes out once connected.
   *
   * @example
   * ```ts
   * airplaneToggle.onchange = () => (airplaneToggle.checked ? client.disconnect() : client.connect())
   * ```
   */
  connect(): void {
    this.link.connect()
  }

  /**
   * Close the client: what was accepted before (sends, acknowledgements, receipts) is stored
   * and, while connected, handed to the relay; then the socket and the storage are closed.
   * Every call resolves once all of that is done, a second call too.
   *
   * @example
   * ```ts
   * process.on('SIGTERM', () => void client.close().then(() => process.exit(0)))
   * ```
   */
  close(): Promise<void> {
    return this.shutdown(false)
  }

  /** The close under way: every call settles with it, not before (an app that exits after a second `close()` lost sends). */
  private closing: Promise<void> | undefined

  private shutdown(displaced: boolean): Promise<void> {
    this.closing ??= this.closeNow(displaced)
    return this.closing
  }

  private async closeNow(displaced: boolean): Promise<void> {
    this.closed = true
    clearTimeout(this.summaryTimer)
    for (const a of this.linkAborts) a.abort()
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

