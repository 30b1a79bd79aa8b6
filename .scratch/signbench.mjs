import { sign, generateSigningKeyPair, signBackend } from '../dist/src/shared/crypto/ed25519.js'
const kp = await generateSigningKeyPair()
const msg = new Uint8Array(200)
console.log(signBackend?.())
for (let r = 0; r < 3; r++) {
  const c0 = process.cpuUsage(); const t0 = performance.now()
  for (let i = 0; i < 10000; i++) await sign(kp.secretKey, msg)
  const c = process.cpuUsage(c0)
  console.log('µs/sign wall', ((performance.now() - t0) / 10).toFixed(1), 'cpu', ((c.user + c.system) / 10000).toFixed(1))
}
