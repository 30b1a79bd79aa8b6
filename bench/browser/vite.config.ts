/** Build of the benchmark page (bench/cold-open-chromium.ts builds it into a temporary folder). */
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'
import { browserOnly } from '../../examples/chat/vite.config.js'

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  build: { target: 'es2022', emptyOutDir: true },
  plugins: [browserOnly()],
})
