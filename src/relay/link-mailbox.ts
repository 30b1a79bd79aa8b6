/**
 * HTTP routes of the link mailbox (RelayStore.putLink / takeLink): how a new device and an
 * existing one pass the few small messages of linking while they share no connection yet.
 *
 *   PUT /v1/link/:id/:slot          raw body, 1..maxBytes bytes
 *       → 201 stored | 409 slot already holds a message | 413 too large | 400 bad id, slot or body
 *   GET /v1/link/:id/:slot?wait=MS[&keep=1]  take the message, waiting up to MS (≤ maxWaitMs) for
 *       one; with keep=1 (slot 1, the answer, only) read it and leave it in its slot (until it
 *       expires or is taken), at most 8 times a message (counted by this node, in memory)
 *       → 200 the bytes (application/octet-stream) | 204 none arrived in time | 400 bad id, slot, wait
 *         or keep | 429 read too often
 *   Either → 429 past the per-address caps (messages stored per TTL, GETs waiting at once).
 *
 * No authentication, by design: the two devices have no credential in common yet. The id is the
 * capability (at least 22 base64url characters, 128 bits when random), the bytes are opaque to
 * the relay (the devices protect them end to end), and the first writer of a slot wins, so a
 * party that learns an id late cannot replace a message already waiting.
 *
 * CORS is open to every origin: the routes use no cookies or other ambient credentials, so `*`
 * grants a foreign page nothing it could not do with fetch from anywhere else.
 *
 * Expired messages are purged inside PUT, at most once a minute, rather than by a
 * timer: only PUT adds data, so storage stays bounded, and there is no timer to outlive the
 * server or to run against a closed store. takeLink never returns an expired message anyway.
 */
import type { Context, Hono } from 'hono'
import { cors } from 'hono/cors'
import { readCapped } from '../shared/read-capped.js'
import type { RelayStore } from './store/relay-store.js'

export interface LinkRoutesOptions {
  /** Largest message, in bytes; default 8192. */
  maxBytes?: number
  /** How long a message waits to be taken; default 10 minutes. */
  ttlMs?: number
  /** Longest `wait` a GET may ask for; default 25 s (below common proxy idle timeouts of 30 s). */
  maxWaitMs?: number
  /** Messages one address may store per `ttlMs`; default 64 (a link takes two or three). Past it: 429. */
  maxPerAddress?: number
  /** GETs one address may have waiting at once; default 16. Past it: 429. */
  maxWaitingPerAddress?: number
  /** The client's address; default the socket's remote address (Node's server), else 'unknown'. */
  addressOf?: (c: Context) => string
}

const ID = /^[A-Za-z0-9_-]{22,64}$/
// A Map, not an object: `SLOTS['constructor']` was a function, past the check, and a 500.
const SLOTS = new Map([
  ['0', 0],
  ['1', 1],
])
const POLL_MS = 100
/**
 * Reads with keep=1 of one message: a new device reads its answer once, or again after a failed
 * start. Uncounted, one message of 8 KiB could be fetched without end by anyone, for 10 minutes:
 * a free file host.
 */
const MAX_KEEP_READS = 8
const PURGE_EVERY_MS = 60_000

/** The remote address of a request served by @hono/node-server (its Node request is `c.env.incoming`). */
const socketAddress = (c: Context): string =>
  (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress ?? 'unknown'

/** Waits `ms`, or less if `signal` aborts first. */
const pause = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })

/**
 * @example
 * ```ts
 * const app = new Hono()
 * mountLinkRoutes(app, store, { maxWaitMs: 10_000 })
 * ```
 */
export function mountLinkRoutes(app: Hono, store: RelayStore, options: LinkRoutesOptions = {}): void {
  const maxBytes = options.maxBytes ?? 8192
  const ttlMs = options.ttlMs ?? 10 * 60_000
  const maxWaitMs = options.maxWaitMs ?? 25_000
  const maxPerAddress = options.maxPerAddress ?? 64
  const maxWaiting = options.maxWaitingPerAddress ?? 16
  const addressOf = options.addressOf ?? socketAddress
  let lastPurge = 0
  // Unauthenticated by design, so bounded per address: one client stored 2,000 messages of
  // 8 KiB at ~300 a second (1.4 GiB per TTL window), and kept 500 GETs polling the store.
  const stored = new Map<string, { since: number; count: number }>()
  const waiting = new Map<string, number>()
  /** `id/slot` → reads with keep=1 of its message, and when the first was (forgotten after ttlMs). */
  const keepReads = new Map<string, { since: number; count: number }>()

  app.use('/v1/link/*', cors({ origin: '*', allowMethods: ['GET', 'PUT'], allowHeaders: ['Content-Type'], maxAge: 600 }))

  app.put('/v1/link/:id/:slot', async (c) => {
    const id = c.req.param('id')
    const slot = SLOTS.get(c.req.param('slot'))
    if (!ID.test(id) || slot === undefined) return c.json({ error: 'bad mailbox id or slot' }, 400)
    const declared = c.req.header('Content-Length')
    if (declared !== undefined) {
      if (!/^\d+$/.test(declared)) return c.json({ error: 'bad Content-Length' }, 400)
      if (Number(declared) > maxBytes) return c.json({ error: `message larger than ${maxBytes} bytes` }, 413)
    }
    // Chunked uploads declare no length, and a declared one may lie: count what arrives.
    const bytes = await readCapped(c.req.raw.body, maxBytes)
    if (bytes === 'too-large') return c.json({ error: `message larger than ${maxBytes} bytes` }, 413)
    if (bytes.length === 0) return c.json({ error: 'empty message' }, 400)
    const now = Date.now()
    const address = addressOf(c)
    let quota = stored.get(address)
    if (!quota || now - quota.since >= ttlMs) {
      quota = { since: now, count: 0 }
      stored.set(address, quota)
    }
    if (quota.count >= maxPerAddress) return c.json({ error: 'too many link messages from this address; try again later' }, 429)
    if (now - lastPurge >= PURGE_EVERY_MS) {
      lastPurge = now
      for (const [a, w] of stored) if (now - w.since >= ttlMs) stored.delete(a)
      for (const [k, r] of keepReads) if (now - r.since >= ttlMs) keepReads.delete(k)
      // Only storage space depends on it, so a failed purge must not fail the PUT; the next one retries.
      await store.purgeLinks(now).catch(() => {
        lastPurge = 0
      })
    }
    if (!(await store.putLink(id, slot, bytes, now + ttlMs))) return c.json({ error: 'slot already holds a message' }, 409)
    // A new message in the slot: its own reads count from none.
    keepReads.delete(`${id}/${slot}`)
    quota.count++
    return c.body(null, 201)
  })

  app.get('/v1/link/:id/:slot', async (c) => {
    // Hono answers HEAD with this route, and a GET takes the message: a proxy's or a monitor's
    // HEAD would destroy it, and the link fail.
    if (c.req.method === 'HEAD') return c.body(null, 405, { Allow: 'GET, PUT' })
    const id = c.req.param('id')
    const slot = SLOTS.get(c.req.param('slot'))
    if (!ID.test(id) || slot === undefined) return c.json({ error: 'bad mailbox id or slot' }, 400)
    const wait = c.req.query('wait') ?? '0'
    if (!/^\d{1,9}$/.test(wait)) return c.json({ error: 'bad wait' }, 400)
    // A new device reads its answer and leaves it until its keys are stored: a device that died
    // in between took the answer with it, and could never link by that link again.
    const keep = c.req.query('keep')
    if (keep !== undefined && (keep !== '1' || slot !== 1)) return c.json({ error: 'bad keep (only keep=1, on slot 1)' }, 400)
    const address = addressOf(c)
    const busy = waiting.get(address) ?? 0
    if (busy >= maxWaiting) return c.json({ error: 'too many waiting requests from this address' }, 429)
    waiting.set(address, busy + 1)
    try {
      return await take(c, id, slot, Date.now() + Math.min(Number(wait), maxWaitMs), keep === '1')
    } finally {
      const left = (waiting.get(address) ?? 1) - 1
      if (left === 0) waiting.delete(address)
      else waiting.set(address, left)
    }
  })

  async function take(c: Context, id: string, slot: number, deadline: number, keep: boolean): Promise<Response> {
    const signal = c.req.raw.signal
    for (;;) {
      const bytes = keep ? await store.readLink(id, slot, Date.now()) : await store.takeLink(id, slot, Date.now())
      if (bytes && keep) {
        const k = `${id}/${slot}`
        const reads = keepReads.get(k) ?? { since: Date.now(), count: 0 }
        if (reads.count >= MAX_KEEP_READS) return c.json({ error: 'this message was read too often; take it' }, 429)
        reads.count++
        keepReads.set(k, reads)
        return c.body(new Uint8Array(bytes), 200, { 'Content-Type': 'application/octet-stream', 'Cache-Control': 'no-store' })
      }
      if (bytes) {
        // The taker left between our take and our answer: put it back for its retry, rather
        // than lose the message (best effort; a new writer may have taken the slot meanwhile).
        if (signal.aborted) {
          await store.putLink(id, slot, bytes, Date.now() + ttlMs).catch(() => false)
          return c.body(null, 204)
        }
        // A take is destructive: no cache may answer a later GET with this message.
        return c.body(new Uint8Array(bytes), 200, { 'Content-Type': 'application/octet-stream', 'Cache-Control': 'no-store' })
      }
      const left = deadline - Date.now()
      if (left <= 0 || signal.aborted) return c.body(null, 204, { 'Cache-Control': 'no-store' })
      await pause(Math.min(POLL_MS, left), signal)
    }
  }
}
