import { Redis } from 'ioredis'
import { InProcessHub } from '../../src/relay/bus/in-process-bus.js'
import { openRedisBus } from '../../src/relay/bus/redis-bus.js'
import { describe, it } from 'vitest'
import { runFanoutBusConformance } from './fanout-bus.conformance.js'
import { redisAvailable, REDIS_URL } from './services.js'

let hub = new InProcessHub()
runFanoutBusConformance('in-process bus', async (node) => {
  if (node === 'a') hub = new InProcessHub()
  return hub.connect(node)
})

const redis = await redisAvailable()
if (redis.ok) {
  let channel = ''
  runFanoutBusConformance(
    'redis bus',
    async (node) => {
      if (node === 'a') channel = `petrel:test:${Math.random().toString(36).slice(2)}`
      return openRedisBus(REDIS_URL, node, channel)
    },
    {
      killConnections: async () => {
        const admin = new Redis(REDIS_URL)
        await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
        await admin.quit()
      },
    },
  )
} else {
  // Only reached outside CI: under CI=true redisAvailable() throws instead.
  describe.skipIf(true)(`redis bus (skipped: ${redis.reason})`, () => {
    it('runs the conformance suite', () => {})
  })
}
