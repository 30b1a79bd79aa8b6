/**
 * Per-thread CPU and run-queue wait of this process, from Linux's `/proc/self/task/<tid>/schedstat`
 * (`run ns • wait ns • timeslices`), for diagnosis (`BENCH_THREADS=1`, benchmark 3). On a
 * machine whose cores are all but full, a message's latency is largely the time its threads
 * were runnable and waiting for a core; `process.cpuUsage()` cannot show that, nor which
 * thread (the two devices, the replica and SQLite threads, V8's own) took the cores.
 * Elsewhere (no `/proc`) `readThreadTimes` returns an empty map.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'

export interface ThreadTime {
  runMs: number
  waitMs: number
  slices: number
}

/** The calling thread's Linux thread id, or undefined where there is no `/proc`. */
export function ownThreadId(): number | undefined {
  try {
    return Number(readlinkSync('/proc/thread-self').split('/').pop())
  } catch {
    return undefined
  }
}

/** Every thread of this process: its CPU and run-queue wait so far. */
export function readThreadTimes(): Map<number, ThreadTime> {
  const out = new Map<number, ThreadTime>()
  let tids: string[]
  try {
    tids = readdirSync('/proc/self/task')
  } catch {
    return out
  }
  for (const tid of tids) {
    try {
      const [run, wait, slices] = readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').trim().split(' ').map(Number)
      out.set(Number(tid), { runMs: run! / 1e6, waitMs: wait! / 1e6, slices: slices! })
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out
}

/**
 * One line per thread that ran at least `minRunMs` between two readings, busiest first:
 * `name run … ms, waited … ms`; `names` labels the threads known by id (others: "thread <tid>").
 */
export function describeThreadTimes(before: Map<number, ThreadTime>, after: Map<number, ThreadTime>, names: Map<number, string>, minRunMs = 5): string[] {
  const rows: Array<{ name: string; run: number; wait: number; slices: number }> = []
  for (const [tid, b] of after) {
    const a = before.get(tid) ?? { runMs: 0, waitMs: 0, slices: 0 }
    const run = b.runMs - a.runMs
    if (run < minRunMs) continue
    rows.push({ name: names.get(tid) ?? `thread ${tid}`, run, wait: b.waitMs - a.waitMs, slices: b.slices - a.slices })
  }
  rows.sort((x, y) => y.run - x.run)
  return rows.map((r) => `${r.name}: ran ${r.run.toFixed(0)} ms, waited for a core ${r.wait.toFixed(0)} ms over ${r.slices} runs`)
}
