/**
 * Applying updates: Petrel's `applyUpdate` (shared/update-reader.ts, Yjs's V1 decoder with
 * var-string.ts's readers) against `Y.applyUpdate`, the same documents built, alternating in the
 * same run. Two workloads of benchmark 3's conversation (`BENCH_APPLY_MESSAGES`, 40,000
 * messages): its whole state into an empty document (an open, a snapshot), and the updates that
 * made it, 40 messages each, in one transaction (the history replica's way, a catch-up's).
 * Reference: Yjs's own reading.
 */
import * as Y from 'yjs'
import { applyUpdate } from '../src/shared/update-reader.js'
import { conversationDoc, fullGc, median } from './common.js'

export interface UpdateApplyResult {
  messages: number
  /** Median ms, Petrel's and Yjs's: the whole state, and the updates one by one. */
  stateMs: { petrel: number; yjs: number }
  updatesMs: { petrel: number; yjs: number }
}

export function updateApply(messages = Number(process.env.BENCH_APPLY_MESSAGES ?? 40_000), rounds = 5): UpdateApplyResult {
  const { doc: source, updates } = conversationDoc(messages)
  const map = source.getMap<unknown>('messages')
  const state = Y.encodeStateAsUpdate(source)
  const expected = JSON.stringify(map.toJSON())
  const time = (apply: (doc: Y.Doc, u: Uint8Array) => void, whole: boolean): number => {
    fullGc()
    const doc = new Y.Doc()
    const t0 = performance.now()
    if (whole) apply(doc, state)
    else doc.transact(() => {
      for (const u of updates) apply(doc, u)
    })
    const ms = performance.now() - t0
    if (JSON.stringify(doc.getMap('messages').toJSON()) !== expected) throw new Error('updateApply: the document built differs')
    doc.destroy()
    return ms
  }
  const runs = { ps: [] as number[], ys: [] as number[], pu: [] as number[], yu: [] as number[] }
  // Alternating; the first round warms both up and is not kept.
  for (let r = 0; r <= rounds; r++) {
    const ps = time(applyUpdate, true)
    const ys = time(Y.applyUpdate, true)
    const pu = time(applyUpdate, false)
    const yu = time(Y.applyUpdate, false)
    if (r === 0) continue
    runs.ps.push(ps)
    runs.ys.push(ys)
    runs.pu.push(pu)
    runs.yu.push(yu)
  }
  source.destroy()
  return { messages, stateMs: { petrel: median(runs.ps), yjs: median(runs.ys) }, updatesMs: { petrel: median(runs.pu), yjs: median(runs.yu) } }
}
