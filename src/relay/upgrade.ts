/**
 * WebSocket upgrades at `/`, handled on the `ws` server directly, beside the Hono app that
 * serves HTTP. Going through Hono's Node adapter kept each connection's Request, Context and
 * URL objects alive for the socket's lifetime (about 13 KB per idle connection, measured by
 * bench/memory.ts); here a connection holds its socket and its Connection, nothing else.
 */
import type { IncomingMessage, Server } from 'node:http'
import type { Duplex } from 'node:stream'
import type { WebSocketServer } from 'ws'
import { FEATURES_QUERY } from '../shared/wire.js'
import { Connection } from './connection.js'
import type { RelayCore } from './relay-core.js'

/**
 * Accept WebSocket upgrades on `server` for the relay, with the per-address connection limit.
 *
 * @example
 * ```ts
 * const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false })
 * acceptWebSockets(httpServer, wss, core)
 * ```
 */
export function acceptWebSockets(server: Server, wss: WebSocketServer, core: RelayCore): void {
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    // Until ws owns the socket, an error on it must not crash the process; ws adds its own.
    socket.on('error', ignore)
    const [path, query] = (request.url ?? '/').split('?', 2)
    if (request.headers.upgrade?.toLowerCase() !== 'websocket' || path !== '/') return refuse(socket, 404, 'not found')
    const ip = core.admitAddress(request.socket.remoteAddress ?? 'unknown')
    forgetPeerName(request.socket)
    if (ip === undefined) {
      core.metrics.reject('too many connections from one address')
      return refuse(socket, 429, 'too many connections from this address')
    }
    // A socket that dies during the handshake gives its slot back; after it, the Connection does.
    const released = () => core.releaseAddress(ip)
    socket.once('close', released)
    wss.handleUpgrade(request, socket, head, (ws) => {
      socket.off('close', released)
      socket.off('error', ignore)
      core.connections.add(new Connection(ws, core, ip, asksForFeatures(query)))
    })
  })
}

const ignore = () => {}

/** Whether the upgrade's query names FEATURES_QUERY (wire.ts): the client takes the `features` frame. */
function asksForFeatures(query: string | undefined): boolean {
  return query !== undefined && new URLSearchParams(query).has(FEATURES_QUERY)
}

/**
 * `remoteAddress` caches an `{ address, family, port }` object on the socket for its whole
 * life (~100 bytes per idle connection); the relay has read what it needs. Node re-reads it
 * on demand when the cache is empty.
 */
function forgetPeerName(socket: object): void {
  const s = socket as { _peername?: unknown }
  if (s._peername !== undefined) s._peername = undefined
}

const STATUS: Record<number, string> = { 404: 'Not Found', 429: 'Too Many Requests' }

function refuse(socket: Duplex, status: number, message: string): void {
  socket.end(`HTTP/1.1 ${status} ${STATUS[status]}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(message)}\r\n\r\n${message}`)
  socket.destroy()
}
