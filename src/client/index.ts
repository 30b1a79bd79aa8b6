/** petrel/client — the engine an app embeds. */
import { type ClientOptions, PetrelClient } from './client.js'

export type { ClientOptions, DeviceInfo, UnreadableConversation } from './client.js'
export type { ConnectionState } from './connection.js'
export type { Conversation, Message } from './conversation.js'
export type { InviteOptions, MemberInfo } from './member-actions.js'
export type { Batch, CommitOptions, DeviceStore, DocName, LogRow } from './storage/device-store.js'
export { ErrorCode, isPetrelError, PetrelError } from '../shared/errors.js'
export type { PetrelClient }

/**
 * Create (or re-open) this device's Petrel client.
 *
 * @example
 * ```ts
 * const alice = await createClient({ relay: 'ws://127.0.0.1:8787', name: 'Alice', storage: './alice.db' })
 * alice.on('connection', (state) => console.log(state))
 * ```
 */
export function createClient(options: ClientOptions): Promise<PetrelClient> {
  return PetrelClient.create(options)
}
