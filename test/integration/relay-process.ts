/** A relay in a process of its own (the CLI, from source): to kill it with SIGKILL, or to measure it apart. */
import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'

/** Start `petrel-relay` on `port` with `database` (and further CLI arguments); resolves once it listens. */
export async function startRelayProcess(port: number, database: string, args: string[] = []): Promise<ChildProcess> {
  return (await spawnRelay(port, database, args)).proc
}

/**
 * Start `petrel-relay` on a port the system picks (`--port 0`): a port found free and handed
 * to the child after is a race, lost to any socket of another test opened in between (a CI
 * run's relay once failed with EADDRINUSE so). Resolves with the port it listens on.
 */
export async function startRelayOnAnyPort(database: string, args: string[] = []): Promise<{ proc: ChildProcess; port: number }> {
  const { proc, out } = await spawnRelay(0, database, args)
  const port = Number(/WebSocket ws:\/\/[^\s]*:(\d+)\)/.exec(out)?.[1])
  if (!Number.isInteger(port) || port <= 0) {
    proc.kill('SIGKILL')
    throw new Error(`the relay did not say its port: ${out}`)
  }
  return { proc, port }
}

async function spawnRelay(port: number, database: string, args: string[]): Promise<{ proc: ChildProcess; out: string }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '../../src/relay/cli.ts'), '--port', String(port), '--database', database, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // The command line decides the port, whatever the environment says.
    env: { ...process.env, PETREL_PORT: '' },
  })
  const out = await new Promise<string>((resolve, reject) => {
    let out = ''
    proc.stdout!.on('data', (d) => {
      out += d
      if (out.includes('Petrel relay on') && out.includes('\n')) resolve(out)
    })
    proc.stderr!.on('data', (d) => {
      out += d
    })
    proc.on('exit', (code) => reject(new Error(`relay exited with ${code}: ${out}`)))
  })
  return { proc, out }
}
