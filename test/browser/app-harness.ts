/**
 * What every browser test of the demo app needs: Debian's Chromium (skipped without it, except
 * in CI), the app built for production, a real relay on port 0 serving it, and a browser.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type Browser, chromium } from 'playwright-core'
import { createRelay, type Relay } from '../../src/relay/index.js'

export const CHROMIUM = '/usr/bin/chromium'
export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const ARTIFACTS = join(ROOT, 'test', 'artifacts')
export const hasChromium = existsSync(CHROMIUM)

if (!hasChromium) {
  const why = `${CHROMIUM} is missing (apt-get install -y chromium)`
  if (process.env.CI === 'true') throw new Error(`browser tests: ${why}; CI must run them`)
  console.warn(`browser tests skipped: ${why}`)
}

export interface AppUnderTest {
  dir: string
  relay: Relay
  browser: Browser
  /** http://127.0.0.1:port — the relay serving the built app. */
  base: string
  stop(): Promise<void>
}

/** Build the app, start a relay serving it and launch Chromium. */
export async function startApp(prefix: string): Promise<AppUnderTest> {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const appDir = join(dir, 'app')
  mkdirSync(ARTIFACTS, { recursive: true })
  execFileSync(process.execPath, [join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', 'examples/chat', '--outDir', appDir, '--emptyOutDir', '--logLevel', 'warn'], {
    cwd: ROOT,
    // vitest sets NODE_ENV=test, which would make a development build (no service worker).
    env: { ...process.env, NODE_ENV: 'production' },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  const relay = await createRelay({ port: 0, database: join(dir, 'relay.db'), staticRoot: appDir, logLevel: 'warn', logWrite: () => {} })
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  })
  return {
    dir,
    relay,
    browser,
    base: relay.url.replace(/^ws/, 'http'),
    stop: async () => {
      await browser.close()
      await relay.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
