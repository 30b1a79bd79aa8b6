/**
 * What a Yjs document's client ids cost each transaction: applying one small update (one
 * message, as a receiving device applies what arrives) into a document that holds N client ids,
 * against the same into a document that holds one. Yjs makes a Map of every client's clock
 * before and after each transaction (`getStateVector`), so the cost grows with the ids, and
 * faster than linearly once those Maps are large. Why it matters: until the twenty-sixth
 * session each writing device took a fresh inner client id at every key epoch, and until the
 * twenty-seventh at every load, so a conversation's documents gathered ids without end
 * (BENCHMARKS.md; session-ids.ts measures the second).
 * Reference: the same work with one id, in the same run.
 */
import * as Y from 'yjs'
import { median } from './common.js'

export interface ClientIdsResult {
  /** µs to apply one single-message update, by the ids the document holds. */
  usPerUpdate: Map<number, number>
}

/** A document of `ids` messages, each written from a client id of its own. */
export function docWithIds(ids: number): Y.Doc {
  const source = new Y.Doc()
  const messages = source.getMap('messages')
  for (let c = 0; c < ids; c++) {
    source.clientID = c + 1
    messages.set(`old.${c}`, { t: 'hello', at: 1_764_540_000_000 + c })
  }
  const doc = new Y.Doc()
  Y.applyUpdate(doc, Y.encodeStateAsUpdate(source))
  source.destroy()
  return doc
}

/** µs to apply each of `updates` single-message updates (from a new client id) into `doc`. */
export function applyCostOn(doc: Y.Doc, updates: number): number {
  const source = new Y.Doc()
  source.clientID = 0x7fff_fff0
  const messages = source.getMap('messages')
  const fresh: Uint8Array[] = []
  source.on('update', (u: Uint8Array) => fresh.push(u))
  for (let i = 0; i < updates; i++) messages.set(`new.${i}`, { t: `message ${i} ${'x'.repeat(80)}`, at: 1_764_540_000_000 + i })
  const t0 = performance.now()
  for (const u of fresh) Y.applyUpdate(doc, u)
  return ((performance.now() - t0) * 1000) / updates
}

const applyCost = (ids: number, updates: number): number => applyCostOn(docWithIds(ids), updates)

export function clientIds(counts: number[], updates = 2000, rounds = 3): ClientIdsResult {
  const samples = new Map<number, number[]>(counts.map((n) => [n, []]))
  // Alternating rounds; the first of all warms the code up and is not kept.
  applyCost(counts[0]!, updates)
  for (let r = 0; r < rounds; r++) for (const n of counts) samples.get(n)!.push(applyCost(n, updates))
  return { usPerUpdate: new Map([...samples].map(([n, xs]) => [n, median(xs)])) }
}
