/**
 * What a conversation is given by its client: the device's identity, store and connection,
 * and the client's settings and callbacks. One object, shared by every conversation of a client.
 */
import type { PetrelError } from '../shared/errors.js'
import type { RecordKind } from '../shared/records.js'
import type { DeviceConnection } from './connection.js'
import type { Conversation } from './conversation.js'
import type { Identity } from './identity.js'
import type { DeviceStore } from './storage/device-store.js'

export interface ClientContext {
  identity: Identity
  store: DeviceStore
  connection: DeviceConnection
  name: string | undefined
  reportError(err: PetrelError): void
  /** Sign a genesis or invite record as this device. */
  signRecord(kind: RecordKind, body: Uint8Array): Promise<Uint8Array>
  /** false: this device sends no read acks and sees none (WhatsApp's privacy setting). */
  readReceipts: boolean
  /** When to start a new key epoch: after this many envelopes, or this long. */
  keyRotation: { messages: number; ms: number }
  /** After every refold of a conversation's records (the client keeps a person's devices in step). */
  membershipChanged?(conv: Conversation): void
  /** Snapshot the history after this many updates since the last snapshot (0: never; see snapshot-schedule.ts). */
  compactEvery: number
  /** Keep a summary for a lazy start (`open: 'lazy'`): this conversation changed. */
  summaryDirty?(conv: Conversation): void
}
