/**
 * A map of message ids as a conversation grows to 262,144 messages: Petrel's ShardedMap
 * (shared/sharded-map.ts) against V8's Map, the same keys in the same order, alternating. What
 * counts is the longest single `set` (a Map moves every entry at once when it grows: the pause
 * a send or a received message meets at 65,536, 131,072 and 262,144 messages) and what a `set`
 * and a `get` cost on average. Reference: `Map`.
 */
import { randomBytes, toBase64Url } from '../src/shared/crypto/index.js'
import { ShardedMap } from '../src/shared/sharded-map.js'
import { median } from './common.js'

export interface ShardedMapResult {
  entries: number
  /** The longest single set (ms) in a fill from empty. */
  worstSetMs: { petrel: number; map: number }
  /** Mean ns a set over the fill, and a get of every key afterwards. */
  nsSet: { petrel: number; map: number }
  nsGet: { petrel: number; map: number }
}

function fill(map: Map<string, number>, keys: string[]): { worst: number; nsSet: number; nsGet: number } {
  let worst = 0
  const t0 = performance.now()
  for (let i = 0; i < keys.length; i++) {
    const t = performance.now()
    map.set(keys[i]!, i)
    const d = performance.now() - t
    if (d > worst) worst = d
  }
  const nsSet = ((performance.now() - t0) * 1e6) / keys.length
  let sink = 0
  const t1 = performance.now()
  for (const key of keys) sink += map.get(key)!
  const nsGet = ((performance.now() - t1) * 1e6) / keys.length
  if (sink !== (keys.length * (keys.length - 1)) / 2) throw new Error('sharded map: a get missed')
  return { worst, nsSet, nsGet }
}

export function shardedMap(entries = 262_144, rounds = 5): ShardedMapResult {
  // Ids as a device makes them (message-id.ts): user, clock in base 36, 8 random characters.
  const keys = Array.from({ length: entries }, (_, i) => `u1.${(1_764_400_000_000 + i).toString(36)}${toBase64Url(randomBytes(6))}`)
  const petrel: ReturnType<typeof fill>[] = []
  const map: ReturnType<typeof fill>[] = []
  // The first round warms both up and is not kept.
  for (let r = 0; r <= rounds; r++) {
    const p = fill(new ShardedMap<number>(), keys)
    const m = fill(new Map<string, number>(), keys)
    if (r === 0) continue
    petrel.push(p)
    map.push(m)
  }
  const med = (runs: ReturnType<typeof fill>[], k: 'worst' | 'nsSet' | 'nsGet') => median(runs.map((x) => x[k]))
  return {
    entries,
    worstSetMs: { petrel: med(petrel, 'worst'), map: med(map, 'worst') },
    nsSet: { petrel: med(petrel, 'nsSet'), map: med(map, 'nsSet') },
    nsGet: { petrel: med(petrel, 'nsGet'), map: med(map, 'nsGet') },
  }
}
