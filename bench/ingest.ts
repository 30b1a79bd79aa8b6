/**
 * End-to-end ingest benchmark, one round at a time: the server (a Petrel relay, or the plain
 * y-websocket server) runs in this process, the load generator in a child process
 * (load-petrel.js / load-yws.js), which reports msgs/s as a JSON line on stdout.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setPersistence, setupWSConnection } from '@y/websocket-server/utils'
import { WebSocketServer } from 'ws'
import { createRelay } from '../src/relay/index.js'
import { type LoadResult, type Workload, workloadArgs } from './common.js'

const running = new Set<ChildProcess>()

/** Kill every load generator still running (on timeout, error, or when the bench is interrupted). */
export function killChildren(): void {
  for (const child of running) child.kill('SIGKILL')
}

/** Extra node flags for the children, e.g. BENCH_CPU_PROF=/tmp/prof for a CPU profile of each. */
function childNodeArgs(): string[] {
  const dir = process.env.BENCH_CPU_PROF
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : []
}

/** Run a compiled bench script in a child process; resolve with the JSON of its last stdout line. */
export function runChild(script: string, args: string[], timeoutMs: number): Promise<LoadResult> {
  const file = fileURLToPath(new URL(script, import.meta.url))
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...childNodeArgs(), file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    running.add(child)
    let stdout = ''
    let stderr = ''
    let timedOut = false
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d
    })
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d
      // Children write only warnings, errors and (BENCH_VERBOSE) progress to stderr.
      process.stderr.write(d)
    })
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      running.delete(child)
      reject(err)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      running.delete(child)
      const tail = stderr.trim().split('\n').slice(-5).join('\n')
      if (timedOut) return reject(new Error(`${script} timed out after ${timeoutMs} ms and was killed${tail ? `\n${tail}` : ''}`))
      const last = stdout.trim().split('\n').pop() ?? ''
      try {
        const result = JSON.parse(last) as LoadResult
        if (code !== 0) process.stderr.write(`${script} exited with ${code ?? signal} after reporting\n`)
        resolve(result)
      } catch {
        reject(new Error(`${script} exited with ${code ?? signal} without a result${tail ? `\n${tail}` : ''}`))
      }
    })
  })
}

/** One round through a fresh Petrel relay (fresh SQLite file) with fresh client storage. */
export async function petrelRound(workload: Workload, round: number, timeoutMs: number): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-bench-'))
  try {
    mkdirSync(join(dir, 'relay'))
    const relay = await createRelay({
      port: 0,
      database: join(dir, 'relay', 'relay.db'),
      logLevel: 'warn',
      logWrite: (line) => process.stderr.write(`${line}\n`),
    })
    try {
      return await runChild('./load-petrel.js', [`--url=${relay.url}`, `--dir=${join(dir, 'clients')}`, `--tag=round${round}`, ...workloadArgs(workload)], timeoutMs)
    } finally {
      await relay.close()
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * One round through the plain y-websocket server (`@y/websocket-server`'s setupWSConnection
 * on a `ws` server): in memory only, no persistence, no encryption, no authentication.
 */
export async function yWebsocketRound(workload: Workload, round: number, timeoutMs: number): Promise<LoadResult> {
  setPersistence(null)
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false })
  wss.on('connection', (ws, req) => setupWSConnection(ws, req))
  await new Promise<void>((resolve, reject) => {
    wss.once('listening', resolve)
    wss.once('error', reject)
  })
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`
  try {
    return await runChild('./load-yws.js', [`--url=${url}`, `--tag=round${round}`, ...workloadArgs(workload)], timeoutMs)
  } finally {
    for (const ws of wss.clients) ws.terminate()
    await new Promise<void>((resolve) => wss.close(() => resolve()))
  }
}
