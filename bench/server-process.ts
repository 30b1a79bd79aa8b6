/** Start a server of bench/server-child.ts in its own process and talk to it over IPC. */
import { type ChildProcess, fork } from 'node:child_process'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export type ServerKind = 'petrel' | 'raw-sqlite-ack' | 'raw-broadcast' | 'raw-idle' | 'raw-handshake' | 'y-websocket' | 'y-websocket-leveldb' | 'hocuspocus' | 'hocuspocus-sqlite'

const live = new Set<ChildProcess>()

export interface ServerProcess {
  url: string
  /** The server's data directory (removed by `stop` unless asked to keep it). */
  dir: string
  pid: number
  /** After a full GC in the child. */
  memory(): Promise<{ rss: number; heapUsed: number; external: number; arrayBuffers: number }>
  /** CPU time the child has used so far, in ms (user + system). */
  cpuMs(): Promise<number>
  /** Wall-clock time (ms since the epoch) at which all it received so far was stored; null for servers that store before acknowledging. */
  durableAt(): Promise<number | null>
  stop(options?: { keepData?: boolean }): Promise<void>
}

/** `from`: a stopped server's data directory to start from a copy of (its database as it was). */
export async function startServer(kind: ServerKind, options: { from?: string } = {}): Promise<ServerProcess> {
  const dir = mkdtempSync(join(tmpdir(), `petrel-bench-${kind}-`))
  if (options.from) cpSync(options.from, dir, { recursive: true })
  const child = fork(fileURLToPath(new URL('./server-child.js', import.meta.url)), [kind, dir], {
    execArgv: ['--expose-gc', ...(process.env.BENCH_CHILD_FLAGS ? process.env.BENCH_CHILD_FLAGS.split(' ') : []), ...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [])],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  live.add(child)
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port))
    child.once('exit', (code) => reject(new Error(`${kind} server exited with ${code}`)))
  })
  const askMemory = () =>
    new Promise<{ memory: NodeJS.MemoryUsage; spaces: Record<string, { size: number; used: number }> }>((resolve) => {
      child.once('message', resolve)
      child.send({ cmd: 'memory' })
    })
  return {
    url: `ws://127.0.0.1:${port}`,
    dir,
    pid: child.pid!,
    memory: async () => {
      const { memory, spaces } = await askMemory()
      if (process.env.BENCH_MEMORY_DETAIL) console.error(kind, JSON.stringify({ rss: memory.rss, heapTotal: memory.heapTotal, heapUsed: memory.heapUsed, external: memory.external, spaces }))
      return memory
    },
    durableAt: () =>
      new Promise<number | null>((resolve) => {
        child.once('message', (m: { durableAt: number | null }) => resolve(m.durableAt))
        child.send({ cmd: 'durable' })
      }),
    // Its own command, not `memory`'s: that one collects garbage twice first. Read at the start
    // of benchmark 3's counted part, it stopped the relay for 50–100 ms right there: the worst
    // latencies of every round at 1,000/s were the messages sent in that moment.
    cpuMs: () =>
      new Promise<number>((resolve) => {
        child.once('message', (m: { cpu: NodeJS.CpuUsage }) => resolve((m.cpu.user + m.cpu.system) / 1000))
        child.send({ cmd: 'cpu' })
      }),
    stop: async (stopOptions = {}) => {
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))])
      child.kill('SIGKILL')
      live.delete(child)
      if (!stopOptions.keepData) rmSync(dir, { recursive: true, force: true })
    },
  }
}

export function killServers(): void {
  for (const c of live) c.kill('SIGKILL')
}
