/**
 * One relay node per SQLite file. Two nodes on one file (a second `petrel-relay` started by
 * mistake, a unit that restarts before the old process is gone) both start cleanly, store into
 * the same rows, and never hear of each other's messages: devices on one node miss what the
 * other's devices send, with nothing in any log. Several nodes need PostgreSQL and Redis
 * (OPERATING.md). So a node holds `<file>.lock` (its pid and host) while it runs; another node
 * refuses to start on the file while that pid lives.
 *
 * A lock left by a node that died (same host, pid gone) is taken over. One from another host
 * (a file on a network share) cannot be checked, and is refused: remove it by hand once sure.
 * Nodes sharing one store object in one process with a bus of their own (tests, embedders
 * running a cluster in one process) pass the store, not the path, and take no lock.
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs'
import { hostname } from 'node:os'
import { ErrorCode, PetrelError } from '../../shared/errors.js'

/**
 * Take the lock of the SQLite file at `path`; returns its release (idempotent).
 *
 * @example
 * ```ts
 * const release = lockSqliteFile('./.petrel/relay.db')
 * // … at close:
 * release()
 * ```
 * @throws PetrelError(StorageFailed) while another live node holds it.
 */
export function lockSqliteFile(path: string): () => void {
  const lockPath = `${path}.lock`
  const mine = `${process.pid}\n${hostname()}\n`
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockPath, 'wx')
      try {
        writeSync(fd, mine)
      } finally {
        closeSync(fd)
      }
      let released = false
      return () => {
        if (released) return
        released = true
        // Only our own: a lock taken over since is another node's.
        try {
          if (readFileSync(lockPath, 'utf8') === mine) unlinkSync(lockPath)
        } catch {
          // Gone already.
        }
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new PetrelError(ErrorCode.StorageFailed, `cannot lock ${path}: ${(err as Error).message}`, { cause: err })
    }
    const [pidText = '', host = ''] = safeRead(lockPath).split('\n')
    const pid = Number(pidText)
    if (host === hostname() && Number.isSafeInteger(pid) && pid > 0 && !alive(pid)) {
      // A node that died: its lock is stale.
      try {
        unlinkSync(lockPath)
      } catch {
        // Another starter took it over first: the next attempt sees whose it is.
      }
      continue
    }
    const who = host === hostname() ? `process ${pid}` : `process ${pidText} on ${host || 'another host'}`
    throw new PetrelError(
      ErrorCode.StorageFailed,
      `${path} is in use by another relay (${who}): two nodes on one SQLite file never hear of each other's messages; run one, or PostgreSQL + Redis for several (remove ${lockPath} if that relay is gone)`,
    )
  }
  throw new PetrelError(ErrorCode.StorageFailed, `cannot lock ${path}: another relay keeps taking it`)
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

/** The process is running (EPERM: it is, under another user). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
