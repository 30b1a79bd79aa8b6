/**
 * Benchmark 5 in the browser: the page that bench/cold-open-chromium.ts loads in Chromium. It
 * exposes the phases of cold-open-phases.ts on `window`, so the runner can write the history,
 * reload the page (a cold start: nothing of the writer is left in memory), then open it.
 */
import { openHistory, plaintextReference, writeHistory } from '../cold-open-phases.js'

const bench = { writeHistory, openHistory, plaintextReference }
;(window as unknown as { petrelBench: typeof bench }).petrelBench = bench
document.body.dataset.ready = 'true'
