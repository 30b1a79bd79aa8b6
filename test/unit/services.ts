/**
 * The real PostgreSQL and Redis of this machine, for store and bus tests. Where one is not
 * reachable the tests that need it skip with the reason — except under CI=true, where a
 * missing service is a failure: CI must prove the scale-out path.
 */
import { Redis } from 'ioredis'

export const REDIS_URL = process.env.PETREL_TEST_REDIS ?? 'redis://127.0.0.1:6379'

export async function redisAvailable(): Promise<{ ok: true } | { ok: false; reason: string }> {
  const client = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.ping()
    return { ok: true }
  } catch (err) {
    const reason = `Redis is not reachable at ${REDIS_URL} (${(err as Error).message}); set PETREL_TEST_REDIS`
    if (process.env.CI === 'true') throw new Error(`CI=true requires Redis: ${reason}`)
    console.warn(reason)
    return { ok: false, reason }
  } finally {
    client.disconnect()
  }
}
