/**
 * A string-keyed Map that never rehashes more than a slice of itself at once.
 *
 * V8 grows a Map by moving every entry into a table twice the size, in one step, on the `set`
 * that finds it full: at 65,536 entries that step took 15 ms on an idle core here, at 131,072
 * 29 ms, at 262,144 64 ms (`BENCH_ONLY=shardedMap`). A conversation keeps several maps keyed by
 * message id (Yjs's own map of the messages, the outer log's envelopes, this device's sent
 * messages, the shown list), and they all cross the same size on the same message: at 10,000
 * messages a second both devices stalled for about 100 ms at the 65,536th, in every round of
 * benchmark 3, and it set the round's p99.
 *
 * Below {@link SPLIT_AT} entries this is one Map. At that size it moves its entries into
 * {@link SHARDS} Maps picked by a hash of the key's last characters (message ids end in random
 * characters), so each later growth moves a 64th of the entries.
 *
 * Iteration visits shard after shard, not insertion order; nothing of Petrel's relies on the
 * order of a map keyed by id (each device inserts in the order updates reach it anyway).
 *
 * @example
 * ```ts
 * const states = new ShardedMap<number>()
 * states.set('u1.0mijy7d34AbCdEfGh', 1)
 * states.get('u1.0mijy7d34AbCdEfGh') // 1
 * ```
 */
import type * as Y from 'yjs'

/** Entries kept in a single Map: a conversation of a few thousand messages never shards. */
export const SPLIT_AT = 4096
const SHARD_BITS = 6
/** Shards once split: each growth after the split moves 1/64 of the entries. */
export const SHARDS = 1 << SHARD_BITS
/** Characters of the key hashed: a message id's random tail is 8 base64url characters. */
const HASHED_CHARS = 8

function shardIndex(key: string): number {
  let h = 0
  for (let i = Math.max(0, key.length - HASHED_CHARS); i < key.length; i++) h = (Math.imul(h, 31) + key.charCodeAt(i)) | 0
  return (h ^ (h >>> SHARD_BITS) ^ (h >>> (2 * SHARD_BITS))) & (SHARDS - 1)
}

export class ShardedMap<V> implements Map<string, V> {
  private one: Map<string, V> | undefined = new Map()
  private shards: Map<string, V>[] = []
  private count = 0

  constructor(entries?: Iterable<readonly [string, V]>) {
    if (entries) for (const [key, value] of entries) this.set(key, value)
  }

  get size(): number {
    return this.count
  }

  get(key: string): V | undefined {
    return (this.one ?? this.shards[shardIndex(key)]!).get(key)
  }

  has(key: string): boolean {
    return (this.one ?? this.shards[shardIndex(key)]!).has(key)
  }

  set(key: string, value: V): this {
    let map = this.one
    if (map !== undefined && map.size >= SPLIT_AT && !map.has(key)) {
      this.split(map)
      map = undefined
    }
    map ??= this.shards[shardIndex(key)]!
    const before = map.size
    map.set(key, value)
    this.count += map.size - before
    return this
  }

  delete(key: string): boolean {
    const deleted = (this.one ?? this.shards[shardIndex(key)]!).delete(key)
    if (deleted) this.count--
    return deleted
  }

  clear(): void {
    this.one = new Map()
    this.shards = []
    this.count = 0
  }

  forEach(callback: (value: V, key: string, map: Map<string, V>) => void, thisArg?: unknown): void {
    if (this.one !== undefined) {
      for (const [key, value] of this.one) callback.call(thisArg, value, key, this)
      return
    }
    for (const shard of this.shards) for (const [key, value] of shard) callback.call(thisArg, value, key, this)
  }

  entries(): MapIterator<[string, V]> {
    return this.chain((map) => map.entries())
  }

  keys(): MapIterator<string> {
    return this.chain((map) => map.keys())
  }

  values(): MapIterator<V> {
    return this.chain((map) => map.values())
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries()
  }

  get [Symbol.toStringTag](): string {
    return 'ShardedMap'
  }

  /**
   * The shards' own iterators one after another. Not a generator: a `yield*` per shard cost
   * several times a Map's own step per entry, and a whole-map pass runs at every snapshot.
   */
  private chain<T>(iterate: (map: Map<string, V>) => Iterator<T>): MapIterator<T> {
    const maps = this.one !== undefined ? [this.one] : this.shards
    let at = 0
    let current: Iterator<T> | undefined = maps.length > 0 ? iterate(maps[0]!) : undefined
    const it = {
      next(): IteratorResult<T, undefined> {
        while (current !== undefined) {
          const step = current.next()
          if (step.done !== true) return step
          current = ++at < maps.length ? iterate(maps[at]!) : undefined
        }
        return { done: true, value: undefined }
      },
      [Symbol.iterator]() {
        return it
      },
    }
    return it as MapIterator<T>
  }

  private split(one: Map<string, V>): void {
    const shards = Array.from({ length: SHARDS }, () => new Map<string, V>())
    for (const [key, value] of one) shards[shardIndex(key)]!.set(key, value)
    this.shards = shards
    this.one = undefined
  }
}

/**
 * Gives a Y.Map's entries to a {@link ShardedMap}. Yjs keeps a map type's entries in its `_map`
 * (a Map of key → the key's last Item) and reaches it only through `get`, `set`, `forEach` and
 * `entries`, which ShardedMap has; the Y.Map behaves as before (sharded-map.test.ts applies the
 * same updates to a plain and a sharded one). Call it on a root map right after `getMap`, before
 * the document holds much: the entries held are moved over.
 *
 * @example
 * ```ts
 * const messages = shardYMap(doc.getMap(INNER_MESSAGES))
 * ```
 */
export function shardYMap<T>(map: Y.Map<T>): Y.Map<T> {
  if (!(map._map instanceof ShardedMap)) map._map = new ShardedMap(map._map)
  return map
}
