/** A relay in a process of its own (the CLI, from source): to kill it with SIGKILL, or to measure it apart. */
import { type ChildProcess, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'

/** A TCP port nobody listens on right now. */
export const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port
      srv.close(() => resolve(port))
    })
  })

/** Start `petrel-relay` on `port` with `database` (and further CLI arguments); resolves once it listens. */
export async function startRelayProcess(port: number, database: string, args: string[] = []): Promise<ChildProcess> {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../../src/relay/cli.ts'), '--port', String(port), '--database', database, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // The command line decides the port, whatever the environment says.
    env: { ...process.env, PETREL_PORT: '' },
  })
  await new Promise<void>((resolve, reject) => {
    let out = ''
    proc.stdout!.on('data', (d) => {
      out += d
      if (out.includes('Petrel relay on')) resolve()
    })
    proc.stderr!.on('data', (d) => {
      out += d
    })
    proc.on('exit', (code) => reject(new Error(`relay exited with ${code}: ${out}`)))
  })
  return proc
}
