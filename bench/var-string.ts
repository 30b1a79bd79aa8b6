/**
 * Writing strings into lib0 encoders: Petrel's `writeVarString` (shared/var-string.ts) against
 * lib0's, the same bytes, in the same run. The workload is what every send hashes: a message's
 * signed bytes (message-signature.ts), with benchmark 3's sizes (a 43-character room and
 * device id, a 56-character message id, an 87-character text), and the same with a text of
 * 1,000 non-ASCII characters. Reference: lib0's `writeVarString`.
 */
import * as encoding from 'lib0/encoding'
import { writeVarString } from '../src/shared/var-string.js'
import { median } from './common.js'

export interface VarStringResult {
  /** ns to encode one message's signed bytes, Petrel's writer and lib0's. */
  nsShort: { petrel: number; lib0: number }
  nsLong: { petrel: number; lib0: number }
}

type Writer = (e: encoding.Encoder, s: string) => void

function cost(write: Writer, text: string, n: number): number {
  const room = 'r'.repeat(43)
  const device = 'd'.repeat(43)
  const e = encoding.createEncoder()
  let sink = 0
  const t0 = performance.now()
  for (let i = 0; i < n; i++) {
    e.cpos = 0
    e.bufs = []
    write(e, room)
    write(e, `${device}.${i.toString(36).padStart(12, '0')}`)
    write(e, text)
    encoding.writeVarUint(e, 1_764_540_000_000 + i)
    encoding.writeVarUint(e, 1_764_540_000_000 + i)
    encoding.writeVarUint(e, i)
    write(e, device)
    sink += e.cpos
  }
  const ns = ((performance.now() - t0) * 1e6) / n
  if (sink === 0) throw new Error('nothing written')
  return ns
}

export function varString(n = 200_000, rounds = 5): VarStringResult {
  const short = `#12345 ${'x'.repeat(80)}`
  const long = 'é€'.repeat(500)
  const runs = { ps: [] as number[], ls: [] as number[], pl: [] as number[], ll: [] as number[] }
  // Alternating rounds; the first warms the code up and is not kept.
  for (let r = 0; r <= rounds; r++) {
    const ps = cost(writeVarString, short, n)
    const ls = cost(encoding.writeVarString, short, n)
    const pl = cost(writeVarString, long, n / 10)
    const ll = cost(encoding.writeVarString, long, n / 10)
    if (r === 0) continue
    runs.ps.push(ps)
    runs.ls.push(ls)
    runs.pl.push(pl)
    runs.ll.push(ll)
  }
  return { nsShort: { petrel: median(runs.ps), lib0: median(runs.ls) }, nsLong: { petrel: median(runs.pl), lib0: median(runs.ll) } }
}
