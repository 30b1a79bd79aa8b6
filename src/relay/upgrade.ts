/**
 * WebSocket upgrades at `/`, handled on the `ws` server directly, beside the Hono app that
 * serves HTTP. Going through Hono's Node adapter kept each connection's Request, Context and
 * URL objects alive for the socket's lifetime (about 13 KB per idle connection, measured by
 * bench/memory.ts); here a connection holds its socket and its Connection, nothing else.
 */
import type { IncomingMessage, Server } from 'node:http'
import type { Duplex } from 'node:stream'
import type { WebSocketServer } from 'ws'
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
  const perIp = new Map<string, number>()
  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {})
    const path = (request.url ?? '/').split('?')[0]
    if (request.headers.upgrade?.toLowerCase() !== 'websocket' || path !== '/') return refuse(socket, 404, 'not found')
    const ip = request.socket.remoteAddress ?? 'unknown'
    if ((perIp.get(ip) ?? 0) >= core.limits.maxConnectionsPerIp) {
      core.metrics.reject('too many connections from one address')
      return refuse(socket, 429, 'too many connections from this address')
    }
    perIp.set(ip, (perIp.get(ip) ?? 0) + 1)
    let counted = true
    const release = () => {
      if (!counted) return
      counted = false
      const n = (perIp.get(ip) ?? 1) - 1
      if (n > 0) perIp.set(ip, n)
      else perIp.delete(ip)
    }
    socket.once('close', release)
    wss.handleUpgrade(request, socket, head, (ws) => {
      core.connections.add(new Connection(ws, core, ip))
    })
  })
}

const STATUS: Record<number, string> = { 404: 'Not Found', 429: 'Too Many Requests' }

function refuse(socket: Duplex, status: number, message: string): void {
  socket.end(`HTTP/1.1 ${status} ${STATUS[status]}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(message)}\r\n\r\n${message}`)
  socket.destroy()
}
