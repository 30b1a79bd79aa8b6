/**
 * The full-client figure beside benchmark 1: end-to-end messages per second through one Petrel relay, beside the same
 * workload over plain y-websocket, measured in the same run (rounds alternate), with the load
 * generated from another process. The last line of output is one JSON object with the figures.
 *
 * Environment: BENCH_PAIRS (4), BENCH_MESSAGES (5000 per sender), BENCH_BATCH (50),
 * BENCH_TEXT_BYTES (100), BENCH_ROUNDS (3 per system), BENCH_ROUND_TIMEOUT_MS (120000),
 * BENCH_VERBOSE (children's progress on stderr), BENCH_CPU_PROF (dir: CPU-profile the children).
 */
import { cpus, loadavg } from 'node:os'
import { defaultWorkload, envInt, type LoadResult, median } from './common.js'
import { petrelRound, yWebsocketRound } from './ingest.js'

type System = 'petrel' | 'y-websocket'

const fmt = (n: number | undefined): string => (n === undefined || Number.isNaN(n) ? 'n/a' : Math.round(n).toLocaleString('en-US'))
const round1 = (n: number): number => Math.round(n * 10) / 10

export async function e2e(): Promise<{ petrel: number; yWebsocket: number; ratio: number }> {
  const workload = defaultWorkload()
  const rounds = envInt('BENCH_ROUNDS', 3)
  const timeoutMs = envInt('BENCH_ROUND_TIMEOUT_MS', 120_000)
  const total = workload.pairs * workload.messages
  const cpu = cpus()
  const load0 = loadavg()[0]!
  console.log('petrel ingest benchmark: end-to-end messages/s, load generated in a child process')
  console.log(
    `workload: ${workload.pairs} sender→receiver pairs × ${workload.messages} messages of ${workload.textBytes} B ` +
      `(${total} per round), sends fired in batches of ${workload.batch}; ${rounds} rounds per system, alternating`,
  )
  console.log(`machine: ${cpu.length} × ${cpu[0]?.model.trim() ?? 'cpu'}, node ${process.version}, ${process.platform}/${process.arch}, load average at start ${load0.toFixed(2)}`)
  console.log('petrel:      relay in this process (SQLite on disk), clients in a child (SQLite each), sealed + signed envelopes')
  console.log('y-websocket: @y/websocket-server in this process (in memory: no persistence, no encryption, no auth), y-websocket providers in a child')
  console.log('')

  const results: Record<System, Array<LoadResult | undefined>> = { petrel: [], 'y-websocket': [] }
  const failures: string[] = []
  const systems: Array<[System, typeof petrelRound]> = [
    ['petrel', petrelRound],
    ['y-websocket', yWebsocketRound],
  ]
  for (let r = 1; r <= rounds; r++) {
    for (const [system, run] of systems) {
      try {
        const res = await run(workload, r, timeoutMs)
        results[system].push(res)
        console.log(
          `round ${r} ${system.padEnd(11)} ${fmt(res.msgsPerSec).padStart(8)} msgs/s  ` +
            `(${total} msgs in ${fmt(res.elapsedMs)} ms; last send returned at ${fmt(res.sendPhaseMs)} ms; setup ${fmt(res.setupMs)} ms)`,
        )
      } catch (err) {
        results[system].push(undefined)
        const msg = err instanceof Error ? err.message : String(err)
        failures.push(`round ${r} ${system}: ${msg}`)
        console.log(`round ${r} ${system.padEnd(11)}   FAILED: ${msg.split('\n')[0]}`)
      }
    }
  }

  const rates = (s: System): number[] => results[s].filter((x): x is LoadResult => x !== undefined).map((x) => x.msgsPerSec)
  const petrel = median(rates('petrel'))
  const yws = median(rates('y-websocket'))
  const ratio = petrel / yws
  const cell = (s: System, i: number): string => fmt(results[s][i]?.msgsPerSec)
  const header = ['system', ...Array.from({ length: rounds }, (_, i) => `round ${i + 1}`), 'median msgs/s']
  const row = (s: System, median: number): string[] => [s, ...Array.from({ length: rounds }, (_, i) => cell(s, i)), fmt(median)]
  const lines = [header, header.map((h) => '-'.repeat(h.length)), row('petrel', petrel), row('y-websocket', yws)]
  console.log('')
  for (const l of lines) console.log(`| ${l.join(' | ')} |`)
  console.log('')
  const how = !Number.isFinite(ratio) ? 'n/a' : ratio >= 1 ? `${ratio.toFixed(2)}× as fast` : `${(1 / ratio).toFixed(2)}× slower`
  console.log(`ratio Petrel / y-websocket: ${Number.isFinite(ratio) ? ratio.toFixed(3) : 'n/a'} (Petrel ${how})`)
  console.log(`load average at end ${loadavg()[0]!.toFixed(2)} (other work on the machine skews both systems)`)
  for (const f of failures) console.log(`failure: ${f}`)

  const num = (n: number): number | null => (Number.isFinite(n) ? round1(n) : null)
  const summary = {
    e2e: {
      petrelMsgsPerSec: num(petrel),
      yWebsocketMsgsPerSec: num(yws),
      ratioVsYWebsocket: Number.isFinite(ratio) ? Math.round(ratio * 10_000) / 10_000 : null,
      rounds: {
        petrel: results.petrel.map((x) => (x ? round1(x.msgsPerSec) : null)),
        yWebsocket: results['y-websocket'].map((x) => (x ? round1(x.msgsPerSec) : null)),
      },
      workload: { ...workload, messagesPerRound: total },
      cores: cpu.length,
      node: process.version,
      loadAverage: { start: round1(load0), end: round1(loadavg()[0]!) },
    },
  }
  console.log(JSON.stringify(summary))
  return { petrel, yWebsocket: yws, ratio }
}

