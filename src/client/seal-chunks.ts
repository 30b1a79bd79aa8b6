/**
 * Sends queued while the previous batch was being written share envelopes. Each envelope costs
 * a receiver one Ed25519 verification (~75 µs of CPU on the benchmark machine) and the relay
 * one row, whatever it carries; a burst of sends — an outbox draining, a paste of many lines,
 * a bot — is sealed as a few envelopes instead of one per message. Nothing waits to be merged:
 * only what is already queued together is, so latency is unchanged.
 *
 * An envelope still carries one inner Yjs update (plaintext kind 1): the merge of the queued
 * updates, which Yjs applies exactly as it would the parts one by one. Every message in it keeps
 * its own signature inside the document, its own id and its own outbox state; they are
 * acknowledged (✓), refused or re-sealed together, as one envelope.
 */
import * as Y from 'yjs'

/** Inner-update bytes one envelope gathers at most (before sealing). */
export const MERGE_BYTES = 16 * 1024

export interface SealChunk {
  update: Uint8Array
  tags: string[]
}

/**
 * Group queued updates, in order, into chunks of at most `limit` bytes; an update over a
 * quarter of the limit goes alone (as every update did before merging).
 *
 * @example const chunks = chunkForSealing(queue, MERGE_BYTES) // 500 short sends → ~10 chunks
 */
export function chunkForSealing(items: ReadonlyArray<{ update: Uint8Array; tags: string[] }>, limit: number): SealChunk[] {
  const chunks: SealChunk[] = []
  let updates: Uint8Array[] = []
  let tags: string[] = []
  let bytes = 0
  const close = () => {
    if (updates.length === 0) return
    chunks.push({ update: updates.length === 1 ? updates[0]! : Y.mergeUpdates(updates), tags })
    updates = []
    tags = []
    bytes = 0
  }
  for (const item of items) {
    // A big update goes alone: if the relay's limit drops while it waits offline, only it fails.
    if (item.update.length > limit / 4) {
      close()
      chunks.push({ update: item.update, tags: item.tags })
      continue
    }
    if (bytes + item.update.length > limit) close()
    updates.push(item.update)
    tags = tags.length === 0 ? item.tags : [...tags, ...item.tags]
    bytes += item.update.length
  }
  close()
  return chunks
}
