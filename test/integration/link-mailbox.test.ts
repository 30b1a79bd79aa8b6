/** The link mailbox's HTTP routes, against a real relay over HTTP (global fetch). */
import { randomBytes } from 'node:crypto'
import { Hono } from 'hono'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Relay } from '../../src/relay/index.js'
import { mountLinkRoutes } from '../../src/relay/link-mailbox.js'
import { openSqliteRelayStore } from '../../src/relay/store/sqlite-store.js'
import { World } from './harness.js'

const newId = (): string => randomBytes(16).toString('base64url')
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('link mailbox over HTTP', () => {
  const world = new World()
  let relay: Relay
  let base: string

  beforeAll(async () => {
    relay = await world.relay()
    base = `http://127.0.0.1:${relay.port}/v1/link`
  })
  afterAll(() => world.close())

  const put = (id: string, slot: string, body: BodyInit, headers: Record<string, string> = {}) =>
    fetch(`${base}/${id}/${slot}`, { method: 'PUT', body, headers: { 'Content-Type': 'application/octet-stream', ...headers } })
  const get = (id: string, slot: string, wait?: number, signal?: AbortSignal) =>
    fetch(`${base}/${id}/${slot}${wait === undefined ? '' : `?wait=${wait}`}`, { signal })

  it('stores a message and hands it to one GET, exactly, once', async () => {
    const id = newId()
    const message = new Uint8Array(256).map((_, i) => i)
    const stored = await put(id, '0', message)
    expect(stored.status).toBe(201)
    expect(stored.headers.get('access-control-allow-origin')).toBe('*')

    const taken = await get(id, '0')
    expect(taken.status).toBe(200)
    expect(taken.headers.get('content-type')).toBe('application/octet-stream')
    expect(taken.headers.get('access-control-allow-origin')).toBe('*')
    expect(new Uint8Array(await taken.arrayBuffer())).toEqual(message)
    expect((await get(id, '0')).status).toBe(204)
  })

  it('with keep=1 reads a message and leaves it, waiting for one as a take does; keep takes no other value', async () => {
    const id = newId()
    const keep = (wait: number) => fetch(`${base}/${id}/1?wait=${wait}&keep=1`)
    const waiting = keep(2000)
    await sleep(200)
    expect((await put(id, '1', Uint8Array.of(7, 8))).status).toBe(201)
    const first = await waiting
    expect(first.status).toBe(200)
    expect(first.headers.get('cache-control')).toBe('no-store')
    expect(new Uint8Array(await first.arrayBuffer())).toEqual(Uint8Array.of(7, 8))
    expect(new Uint8Array(await (await keep(0)).arrayBuffer())).toEqual(Uint8Array.of(7, 8))
    // Still there, and still holding its slot, until taken.
    expect((await put(id, '1', Uint8Array.of(9))).status).toBe(409)
    expect(new Uint8Array(await (await get(id, '1')).arrayBuffer())).toEqual(Uint8Array.of(7, 8))
    expect((await keep(0)).status).toBe(204)
    for (const bad of ['0', 'true', '', '11']) expect((await fetch(`${base}/${id}/1?keep=${bad}`)).status, bad).toBe(400)
    // Offers (slot 0) are only ever taken.
    expect((await fetch(`${base}/${id}/0?keep=1`)).status).toBe(400)
  })

  it('lets a message be read with keep=1 eight times, then only taken: the mailbox is no file host', async () => {
    const id = newId()
    expect((await put(id, '1', new Uint8Array(8192).fill(1))).status).toBe(201)
    for (let i = 0; i < 8; i++) expect((await fetch(`${base}/${id}/1?keep=1`)).status, `read ${i}`).toBe(200)
    const refused = await fetch(`${base}/${id}/1?keep=1`)
    expect(refused.status).toBe(429)
    expect(await refused.json()).toEqual({ error: 'this message was read too often; take it' })
    expect((await get(id, '1')).status).toBe(200)
    // The next message in that slot is read as often again.
    expect((await put(id, '1', Uint8Array.of(2))).status).toBe(201)
    expect((await fetch(`${base}/${id}/1?keep=1`)).status).toBe(200)
  })

  it('answers HEAD with 405 and keeps the message: a proxy or a monitor must not take it', async () => {
    const id = newId()
    expect((await put(id, '0', Uint8Array.of(1, 2, 3))).status).toBe(201)
    const head = await fetch(`${base}/${id}/0`, { method: 'HEAD' })
    expect(head.status).toBe(405)
    expect(head.headers.get('allow')).toBe('GET, PUT')
    const taken = await get(id, '0')
    expect(taken.status).toBe(200)
    // Bytes chosen by whoever PUT them are never sniffed into a page of this origin.
    expect(taken.headers.get('x-content-type-options')).toBe('nosniff')
    expect(new Uint8Array(await taken.arrayBuffer())).toEqual(Uint8Array.of(1, 2, 3))
  })

  it('keeps the two slots of a mailbox apart', async () => {
    const id = newId()
    expect((await put(id, '1', new Uint8Array([1]))).status).toBe(201)
    expect((await get(id, '0')).status).toBe(204)
    expect(new Uint8Array(await (await get(id, '1')).arrayBuffer())).toEqual(new Uint8Array([1]))
  })

  it('long-polls: a GET waiting receives a message put 300 ms later', async () => {
    const id = newId()
    const start = Date.now()
    const waiting = get(id, '1', 5000)
    await sleep(300)
    expect((await put(id, '1', new TextEncoder().encode('hello'))).status).toBe(201)
    const res = await waiting
    expect(res.status).toBe(200)
    expect(new TextDecoder().decode(await res.arrayBuffer())).toBe('hello')
    const elapsed = Date.now() - start
    expect(elapsed).toBeGreaterThanOrEqual(290)
    expect(elapsed).toBeLessThan(2000)
  })

  it('answers 204 when nothing arrives within wait', async () => {
    const start = Date.now()
    const res = await get(newId(), '0', 300)
    expect(res.status).toBe(204)
    expect(Date.now() - start).toBeGreaterThanOrEqual(290)
  })

  it('stops polling when the waiting request is aborted', async () => {
    const store = relay.store
    const takeLink = store.takeLink
    let takes = 0
    store.takeLink = (...args) => {
      takes++
      return takeLink.apply(store, args)
    }
    try {
      const id = newId()
      const controller = new AbortController()
      const waiting = get(id, '0', 20_000, controller.signal).catch((err: Error) => err)
      await sleep(250)
      expect(takes).toBeGreaterThan(0)
      controller.abort()
      expect(await waiting).toBeInstanceOf(Error)
      await sleep(150)
      const after = takes
      await sleep(400)
      expect(takes).toBe(after)
      // Nothing was taken by the abandoned poll.
      expect((await put(id, '0', new Uint8Array([7]))).status).toBe(201)
      expect((await get(id, '0')).status).toBe(200)
    } finally {
      store.takeLink = takeLink
    }
  })

  it('refuses a second message in a taken slot with 409, keeping the first', async () => {
    const id = newId()
    expect((await put(id, '0', new Uint8Array([1]))).status).toBe(201)
    expect((await put(id, '0', new Uint8Array([2]))).status).toBe(409)
    expect(new Uint8Array(await (await get(id, '0')).arrayBuffer())).toEqual(new Uint8Array([1]))
  })

  it('refuses a message over 8192 bytes with 413, declared or streamed without a length', async () => {
    const id = newId()
    expect((await put(id, '0', new Uint8Array(8193))).status).toBe(413)
    const chunks = [new Uint8Array(4096), new Uint8Array(4096), new Uint8Array(4096)]
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        const chunk = chunks.shift()
        if (chunk) controller.enqueue(chunk)
        else controller.close()
      },
    })
    const streamed = await fetch(`${base}/${id}/0`, { method: 'PUT', body: stream, duplex: 'half' } as RequestInit)
    expect(streamed.status).toBe(413)
    expect((await get(id, '0')).status).toBe(204)
    // The limit itself is allowed.
    expect((await put(id, '0', new Uint8Array(8192))).status).toBe(201)
  })

  it('answers 400 to a bad id, slot, body or wait', async () => {
    const id = newId()
    const one = new Uint8Array([1])
    expect((await put('short', '0', one)).status).toBe(400)
    expect((await put(`${id.slice(1)}!`, '0', one)).status).toBe(400)
    expect((await put('a'.repeat(65), '0', one)).status).toBe(400)
    expect((await put(id, '2', one)).status).toBe(400)
    expect((await put(id, '00', one)).status).toBe(400)
    expect((await put(id, '0', new Uint8Array(0))).status).toBe(400)
    expect((await get('short', '0')).status).toBe(400)
    expect((await get(id, 'x')).status).toBe(400)
    // Names every object has: not slots either.
    for (const slot of ['constructor', 'toString', 'valueOf', 'hasOwnProperty', '__proto__']) {
      expect((await put(id, slot, one)).status, slot).toBe(400)
      expect((await get(id, slot)).status, slot).toBe(400)
    }
    expect((await fetch(`${base}/${id}/0?wait=-1`)).status).toBe(400)
    expect((await fetch(`${base}/${id}/0?wait=soon`)).status).toBe(400)
    // Nothing was stored by the refused requests.
    expect((await put(id, '0', one)).status).toBe(201)
  })

  it('answers a CORS preflight from another origin', async () => {
    const res = await fetch(`${base}/${newId()}/0`, {
      method: 'OPTIONS',
      headers: { Origin: 'https://elsewhere.example', 'Access-Control-Request-Method': 'PUT', 'Access-Control-Request-Headers': 'content-type' },
    })
    expect(res.status).toBe(204)
    expect(res.headers.get('access-control-allow-origin')).toBe('*')
    expect(res.headers.get('access-control-allow-methods')?.split(',').map((m) => m.trim())).toEqual(expect.arrayContaining(['GET', 'PUT']))
    expect(res.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('content-type')
  })
})

describe('mountLinkRoutes options', () => {
  it('expires messages after ttlMs and caps maxBytes and wait', async () => {
    const store = openSqliteRelayStore(':memory:')
    try {
      const app = new Hono()
      mountLinkRoutes(app, store, { ttlMs: 50, maxBytes: 4, maxWaitMs: 100 })
      const id = newId()
      const put = (body: Uint8Array<ArrayBuffer>) => app.request(`/v1/link/${id}/0`, { method: 'PUT', body })
      expect((await put(new Uint8Array(5))).status).toBe(413)
      expect((await put(new Uint8Array(4))).status).toBe(201)
      await sleep(80)
      const start = Date.now()
      expect((await app.request(`/v1/link/${id}/0?wait=20000`)).status).toBe(204)
      expect(Date.now() - start).toBeLessThan(1000)
    } finally {
      await store.close()
    }
  })
  it('caps what one address stores per TTL and how many GETs it keeps waiting (429)', async () => {
    const store = openSqliteRelayStore(':memory:')
    try {
      const app = new Hono()
      mountLinkRoutes(app, store, { maxPerAddress: 3, maxWaitingPerAddress: 2, addressOf: (c) => c.req.header('X-Test-Address') ?? '' })
      const from = (address: string) => ({ 'X-Test-Address': address })
      const put = (address: string) => app.request(`/v1/link/${newId()}/0`, { method: 'PUT', body: new Uint8Array([1]), headers: from(address) })
      for (let i = 0; i < 3; i++) expect((await put('a')).status).toBe(201)
      expect((await put('a')).status).toBe(429)
      // Another address is not held back by it.
      expect((await put('b')).status).toBe(201)
      const abort = new AbortController()
      const wait = (address: string) => app.request(`/v1/link/${newId()}/0?wait=5000`, { headers: from(address), signal: abort.signal })
      const waiting = [wait('a'), wait('a')]
      await sleep(50)
      expect((await wait('a')).status).toBe(429)
      const other = wait('b')
      abort.abort()
      for (const r of await Promise.all([...waiting, other])) expect(r.status).toBe(204)
      // Their slots given back: another may wait again.
      const again = new AbortController()
      const later = app.request(`/v1/link/${newId()}/0?wait=100`, { headers: from('a'), signal: again.signal })
      expect((await later).status).toBe(204)
    } finally {
      await store.close()
    }
  })
})

describe('link mailbox client against a dishonest relay', () => {
  it('stops reading an answer past MAX_LINK_MESSAGE_BYTES and fails with link_failed, without buffering the rest', async () => {
    const { createServer } = await import('node:http')
    const { LinkMailbox, LinkSlot, MAX_LINK_MESSAGE_BYTES, newLinkSecret } = await import('../../src/client/device-link.js')
    const chunk = Buffer.alloc(1024 * 1024, 0x41)
    let sentMiB = 0
    // 200 with a body of 64 MiB, written as the reader asks for it.
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' })
      const pump = () => {
        while (sentMiB < 64) {
          sentMiB++
          if (!res.write(chunk)) return void res.once('drain', pump)
        }
        res.end()
      }
      res.on('close', () => (sentMiB = Math.min(sentMiB, 64)))
      pump()
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    try {
      const port = (server.address() as { port: number }).port
      const link = newLinkSecret()
      const taken = new LinkMailbox([`ws://127.0.0.1:${port}`]).take(link.mailbox, LinkSlot.Offer, Date.now() + 10_000)
      await expect(taken).rejects.toMatchObject({ code: 'link_failed', message: expect.stringContaining(`over ${MAX_LINK_MESSAGE_BYTES} bytes`) })
      // The relay kept writing until the socket closed; the device read no more than the cap and a chunk.
      expect(sentMiB).toBeLessThan(64)
    } finally {
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    }
  })
})
