/**
 * The fan-out bus on Redis pub/sub: one channel for the cluster, binary messages. Pub/sub
 * keeps nothing, which is fine: the bus only rings, and after a reconnect each node re-reads
 * its rooms from the store (`onReconnect`).
 */
import { Redis } from 'ioredis'
import { ErrorCode, PetrelError } from '../../shared/errors.js'
import type { Logger } from '../log.js'
import { type BusMessage, decodeBusMessage, encodeBusMessage, type FanoutBus } from './fanout-bus.js'

/**
 * A bus on the Redis at `url`. `log` hears when Redis goes away and comes back (once each per
 * outage): without it an operator saw only `/readyz` turn 503.
 *
 * @example
 * ```ts
 * const bus = await openRedisBus('redis://cache:6379', 'node-a', 'petrel:fanout', log)
 * ```
 */
export async function openRedisBus(url: string, node: string, channel = 'petrel:fanout', log?: Logger): Promise<FanoutBus> {
  const options = { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: (n: number) => Math.min(2000, 50 * 2 ** n) }
  const pub = new Redis(url, options)
  const sub = new Redis(url, options)
  let handler: ((m: BusMessage) => void) | undefined
  const reconnectHandlers: Array<() => void> = []
  let subscribed = false
  // Before connecting: without a listener ioredis prints every failed attempt as unhandled.
  // A failed first connect is said below; later drops heal by themselves (ready → re-read).
  let lastError: Error | undefined
  const noted = (err: Error) => {
    lastError = err
  }
  pub.on('error', noted)
  sub.on('error', noted)
  try {
    await Promise.all([pub.connect(), sub.connect()])
    await sub.subscribe(channel)
    subscribed = true
  } catch (cause) {
    pub.disconnect()
    sub.disconnect()
    // ioredis rejects with "Connection is closed."; the socket's own error says why.
    const why = lastError ?? (cause as Error)
    throw new PetrelError(ErrorCode.StorageFailed, `cannot reach Redis at ${url.replace(/\/\/[^@]*@/, '//…@')}: ${why.message}`, { cause: why })
  }
  sub.on('messageBuffer', (_channel: Buffer, message: Buffer) => {
    let m: BusMessage
    try {
      m = decodeBusMessage(new Uint8Array(message.buffer, message.byteOffset, message.byteLength))
    } catch {
      return
    }
    if (m.node !== node) handler?.(m)
  })
  // ioredis re-subscribes by itself after a reconnect; anything published meanwhile is gone,
  // in either direction: what this node published while `pub` was away was lost as surely as
  // what it missed while `sub` was, so either coming back re-reads and rings again.
  const where = url.replace(/\/\/[^@]*@/, '//…@')
  let away = false
  const gone = () => {
    if (!subscribed || away) return
    away = true
    log?.warn('lost Redis; cross-node fan-out waits for it', { node, redis: where, error: lastError?.message })
  }
  pub.on('close', gone)
  sub.on('close', gone)
  const reconnected = () => {
    if (!subscribed) return
    if (away && pub.status === 'ready' && sub.status === 'ready') {
      away = false
      log?.info('Redis is back; re-reading rooms', { node, redis: where })
    }
    for (const h of reconnectHandlers) h()
  }
  sub.on('ready', reconnected)
  pub.on('ready', reconnected)
  return {
    publish: async (m) => {
      try {
        await pub.publish(channel, Buffer.from(encodeBusMessage(m)))
      } catch {
        // A lost doorbell is repaired by the other nodes' reconnect re-read; never fail a write for it.
      }
    },
    subscribe: (h) => {
      handler = h
    },
    onReconnect: (h) => {
      reconnectHandlers.push(h)
    },
    ready: () => pub.status === 'ready' && sub.status === 'ready',
    close: async () => {
      // Closing is no outage to report.
      subscribed = false
      await Promise.allSettled([pub.quit(), sub.quit()])
    },
  }
}
