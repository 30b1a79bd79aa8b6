import { latencyClients } from '../dist/bench/latency-clients.js'
import { killServers } from '../dist/bench/server-process.js'
const rate = Number(process.argv[2] ?? 2000), secs = Number(process.argv[3] ?? 4)
const r = await latencyClients(rate, secs)
console.log(rate, JSON.stringify(r))
await killServers?.()
process.exit(0)
