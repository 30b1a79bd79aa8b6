import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start real relays on port 0; two cores, so keep parallelism modest.
    maxWorkers: 2,
    reporters: ['default'],
  },
})
