/**
 * Sends queued while the previous batch was being written share envelopes. Each envelope costs
 * a receiver one Ed25519 verification (75–180 µs of CPU on the benchmark machine, by the day) and the relay
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

/**
 * Inner-update bytes one envelope gathers at most (before sealing); the relay's envelope limit
 * bounds it further (half of it, see conversation.ts). 16 KiB until the twenty-second session:
 * at 10,000 sends a second that cut each flush's ~120 messages into three batches, each with a
 * batch signature and an envelope signature of its own. At 64 KiB, four alternating pairs of
 * runs of benchmark 3 gave p50 21–29 ms against 46–71 ms, p99 88–129 ms against 131–219 ms, and
 * the devices 155–157 µs of CPU a message against 161–173 µs. 128 KiB was no better.
 */
export const MERGE_BYTES = 64 * 1024

/** A message's bytes in its inner update besides its text (id, device, batch key, times, hash). */
export const BATCH_MESSAGE_OVERHEAD = 320

/**
 * How many of the waiting sends, from the first, go in one batch (one inner update, so one
 * envelope): as many as fit `budget` with their texts' UTF-8 `bytes` and the per-message
 * overhead, and always at least one. Benchmark 3's floor, which had no such cap, gathered an
 * envelope past the relay's limit (256 KiB) after a ~100-ms stall at 10,000 sends a second:
 * the relay refused it, and every later update of that inner client waited on it for good.
 *
 * @example const batch = pending.splice(0, sendsForBatch(pending, MERGE_BYTES))
 */
export function sendsForBatch(sends: ReadonlyArray<{ bytes: number }>, budget: number): number {
  let take = 0
  let size = 0
  for (const { bytes } of sends) {
    if (take > 0 && size + bytes + BATCH_MESSAGE_OVERHEAD > budget) break
    size += bytes + BATCH_MESSAGE_OVERHEAD
    take++
  }
  return take
}

export interface SealChunk {
  update: Uint8Array
  tags: string[]
}

/**
 * Group queued message updates, in order, into chunks of at most `limit` bytes, each chunk one
 * unbroken clock range per client. An update over a quarter of the limit, an untagged update
 * (an app's write to `conv.doc`) and one that does not continue the chunk go alone, as every
 * update did before merging.
 *
 * @example const chunks = chunkForSealing(queue, MERGE_BYTES) // 500 short sends → ~3 chunks
 */
export function chunkForSealing(items: ReadonlyArray<{ update: Uint8Array; tags: string[] }>, limit: number): SealChunk[] {
  // The common case, one send: nothing to merge, nothing to parse.
  if (items.length === 1) return [{ update: items[0]!.update, tags: items[0]!.tags }]
  const chunks: SealChunk[] = []
  let updates: Uint8Array[] = []
  let tags: string[] = []
  let bytes = 0
  // Per client, the clock the open chunk ends at: the next update joins only where it begins.
  let ends = new Map<number, number>()
  const close = () => {
    if (updates.length === 0) return
    chunks.push({ update: updates.length === 1 ? updates[0]! : Y.mergeUpdates(updates), tags })
    updates = []
    tags = []
    bytes = 0
    ends = new Map()
  }
  for (const item of items) {
    // Alone: a big update (if the relay's limit drops while it waits offline, only it fails);
    // an app's own write to the document (tagless: if receivers refuse it, no message goes
    // down with it); and anything that does not continue the chunk's clocks — a retry or a
    // re-seal of an older update merged with new ones would leave a skipped range inside the
    // envelope, and a tombstone for the envelope must never cover what lies in between.
    if (item.update.length > limit / 4 || item.tags.length === 0) {
      // Not parsed: a batch of sends that filled its share of the limit is most of a busy
      // queue, and Y.parseUpdateMeta reads every struct of it (~75 MB of garbage a 40,000-message run).
      close()
      chunks.push({ update: item.update, tags: item.tags })
      continue
    }
    const meta = Y.parseUpdateMeta(item.update)
    let continues = updates.length > 0
    for (const [client, from] of meta.from) {
      const end = ends.get(client)
      if (end !== undefined && end !== from) continues = false
    }
    if (!continues || bytes + item.update.length > limit) close()
    updates.push(item.update)
    tags = tags.length === 0 ? item.tags : [...tags, ...item.tags]
    bytes += item.update.length
    for (const [client, to] of meta.to) ends.set(client, to)
  }
  close()
  return chunks
}
