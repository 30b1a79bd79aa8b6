/**
 * Build of the demo app: `npm run build:app` (= `vite build examples/chat`) writes
 * examples/chat/dist, which the relay serves at `/`; `npx vite examples/chat` is a dev server
 * (point it at a relay: the app connects to the host it was loaded from).
 */
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { defineConfig, type Plugin } from 'vite'

const here = fileURLToPath(new URL('.', import.meta.url))

export default defineConfig({
  root: here,
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
  plugins: [browserOnly(), serviceWorker()],
})

/** Browsers store in IndexedDB: keep the engine's Node-only SQLite store out of the bundle. */
export function browserOnly(): Plugin {
  const stub = '\0petrel-chat:no-sqlite'
  return {
    name: 'petrel-chat-browser-only',
    enforce: 'pre',
    resolveId(id, importer) {
      if (id === './sqlite-store.js' && importer?.replaceAll('\\', '/').includes('/src/client/storage/')) return stub
      return null
    },
    load(id) {
      if (id !== stub) return null
      return "export function openSqliteStore() { throw new Error('SQLite storage needs Node') }\n"
    },
  }
}

/** Writes dist/sw.js: ./sw.js with the list of every built file to precache and its version. */
function serviceWorker(): Plugin {
  let outDir = ''
  return {
    name: 'petrel-chat-service-worker',
    apply: 'build',
    configResolved(config) {
      outDir = resolve(config.root, config.build.outDir)
    },
    closeBundle() {
      const files = readdirSync(outDir, { recursive: true, withFileTypes: true })
        .filter((f) => f.isFile() && f.name !== 'sw.js' && !f.name.endsWith('.map'))
        .map((f) => join(f.parentPath, f.name).slice(outDir.length).split('\\').join('/'))
        .sort()
      const hash = createHash('sha256')
      for (const f of files) hash.update(f).update(readFileSync(join(outDir, f)))
      const shell = files.map((f) => (f === '/index.html' ? '/' : f))
      const version = hash.digest('hex').slice(0, 12)
      const source = readFileSync(join(here, 'sw.js'), 'utf8')
      writeFileSync(join(outDir, 'sw.js'), `self.__SHELL__ = ${JSON.stringify(shell)}\nself.__VERSION__ = '${version}'\n${source}`)
    },
  }
}
