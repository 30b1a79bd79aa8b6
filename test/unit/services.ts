/**
 * The real PostgreSQL and Redis of this machine, for store and bus tests. Where one is not
 * reachable the tests that need it skip with the reason — except under CI=true, where a
 * missing service is a failure: CI must prove the scale-out path.
 */
import { Redis } from 'ioredis'
import pg from 'pg'

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

const DEFAULT_POSTGRES = 'postgres://postgres@127.0.0.1:5432/test'

/** Local servers differ in which role trust auth lets in (postgres or the OS user, often root). */
function postgresCandidates(): string[] {
  const configured = process.env.PETREL_TEST_POSTGRES
  if (configured) return [configured]
  const asRoot = new URL(DEFAULT_POSTGRES)
  asRoot.username = 'root'
  return [DEFAULT_POSTGRES, asRoot.toString()]
}

export async function postgresAvailable(): Promise<{ ok: true; url: string } | { ok: false; reason: string }> {
  const errors: string[] = []
  for (const url of postgresCandidates()) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 })
    try {
      await client.connect()
      await client.query('SELECT 1')
      return { ok: true, url }
    } catch (err) {
      errors.push(`${url}: ${(err as Error).message}`)
    } finally {
      await client.end().catch(() => undefined)
    }
  }
  const reason = `PostgreSQL is not reachable (${errors.join('; ')}); set PETREL_TEST_POSTGRES`
  if (process.env.CI === 'true') throw new Error(`CI=true requires PostgreSQL: ${reason}`)
  console.warn(reason)
  return { ok: false, reason }
}

/** Drop a test schema. */
export async function dropPostgresSchema(url: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${schema.replace(/"/g, '""')}" CASCADE`)
  } finally {
    await client.end()
  }
}
