/**
 * Benchmark 5 in Chromium: the cold open of cold-open-phases.ts on the browser's own IndexedDB
 * (Debian's /usr/bin/chromium through playwright-core). The page (bench/browser) writes the
 * history offline, is reloaded (a cold start), then opens it lazily and by default; the
 * reference (the plaintext Yjs document) is measured in the same page.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { createRelay } from '../src/relay/index.js'
import type { OpenTimes, plaintextReference, writeHistory } from './cold-open-phases.js'

export const CHROMIUM = '/usr/bin/chromium'

export interface ChromiumColdOpenResult extends OpenTimes {
  referenceMs: number
  writeMs: number
  messages: number
  browser: string
}

type Bench = { writeHistory: typeof writeHistory; openHistory: (n: number, key: string) => Promise<OpenTimes>; plaintextReference: typeof plaintextReference }

/** The repository's root: the folder above this file holding package.json (from bench/ or dist/bench/). */
function root(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir
    if (dirname(dir) === dir) throw new Error('no package.json above bench/')
  }
}

/** Undefined without Chromium (the caller says so). */
export async function coldOpenChromium(messages: number): Promise<ChromiumColdOpenResult | undefined> {
  if (!existsSync(CHROMIUM)) return undefined
  const dir = mkdtempSync(join(tmpdir(), 'petrel-bench-chromium-'))
  const pageDir = join(dir, 'page')
  const top = root()
  execFileSync(process.execPath, [join(top, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--config', join(top, 'bench', 'browser', 'vite.config.ts'), '--outDir', pageDir, '--logLevel', 'warn'], {
    cwd: top,
    env: { ...process.env, NODE_ENV: 'production' },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  // The relay only serves the page: the device stays offline.
  const relay = await createRelay({ port: 0, database: join(dir, 'relay.db'), staticRoot: pageDir, logLevel: 'error' })
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] })
  try {
    const page = await browser.newPage()
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    const load = async () => {
      await page.goto(relay.url.replace(/^ws/, 'http'))
      await page.waitForSelector('body[data-ready="true"]')
    }
    const key = `bench-cold-${Date.now()}`
    await load()
    const { writeMs } = await page.evaluate(([n, k]) => (window as unknown as { petrelBench: Bench }).petrelBench.writeHistory(n, k), [messages, key] as const)
    // A cold start: a new page, nothing of the writer left in memory.
    await load()
    const times = await page.evaluate(([n, k]) => (window as unknown as { petrelBench: Bench }).petrelBench.openHistory(n, k), [messages, key] as const)
    const { referenceMs } = await page.evaluate((n) => (window as unknown as { petrelBench: Bench }).petrelBench.plaintextReference(n), messages)
    if (errors.length > 0) throw new Error(`cold open in Chromium: ${errors.join('; ')}`)
    return { ...times, referenceMs, writeMs, messages, browser: `Chromium ${browser.version()}` }
  } finally {
    await browser.close()
    await relay.close()
    rmSync(dir, { recursive: true, force: true })
  }
}
