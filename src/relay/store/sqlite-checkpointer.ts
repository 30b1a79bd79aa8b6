/**
 * WAL checkpoints off the event loop. SQLite's automatic checkpoint runs inside whichever
 * commit crosses the threshold, and with synchronous=FULL it fsyncs the database file there:
 * a stall of tens of milliseconds for every message waiting behind that commit (it was the
 * p99 of relay latency at 10,000 msgs/s). A worker thread with its own connection runs
 * PASSIVE checkpoints instead, which never block writers; the main connection's automatic
 * checkpoint is switched off.
 */
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'

const WORKER = `
const { workerData, parentPort } = require('node:worker_threads')
const Database = require(workerData.driver)
const db = new Database(workerData.path)
db.pragma('busy_timeout = 5000')
let stopped = false
const tick = () => {
  if (stopped) return
  try { db.pragma('wal_checkpoint(PASSIVE)') } catch {}
  setTimeout(tick, workerData.intervalMs)
}
parentPort.on('message', (m) => {
  if (m !== 'stop') return
  stopped = true
  try { db.close() } catch {}
  parentPort.postMessage('stopped')
})
tick()
`

export interface Checkpointer {
  stop(): Promise<void>
}

/** Start checkpointing `path` every `intervalMs` on a worker thread. */
export function startCheckpointer(path: string, intervalMs = 250): Checkpointer {
  const driver = createRequire(import.meta.url).resolve('better-sqlite3')
  const worker = new Worker(WORKER, { eval: true, workerData: { path, driver, intervalMs } })
  worker.unref()
  worker.on('error', () => {})
  return {
    stop: () =>
      new Promise<void>((resolve) => {
        const done = () => {
          void worker.terminate().finally(resolve)
        }
        worker.once('message', done)
        worker.once('exit', () => resolve())
        worker.postMessage('stop')
        setTimeout(done, 2000).unref()
      }),
  }
}
