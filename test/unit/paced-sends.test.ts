import { describe, expect, it } from 'vitest'
import { PacedSends } from '../../bench/paced-sends.js'

// This process's own CPU stands in for the relay's: a real reading, of another process than the one the pacer runs in.
const ownCpu = { cpuMs: async () => (process.cpuUsage().user + process.cpuUsage().system) / 1000 }

describe('benchmark 3 pacer (bench)', () => {
  it('sends every text in order, no faster than the rate, and marks the last tick', async () => {
    const paced = new PacedSends(2000, 200, 0.05, ownCpu)
    const texts: string[] = []
    const lasts: boolean[] = []
    const started = performance.now()
    await paced.run(
      (text) => texts.push(text),
      (last) => lasts.push(last),
    )
    expect(performance.now() - started).toBeGreaterThanOrEqual(95)
    expect(texts).toHaveLength(200)
    expect(texts.every((t, i) => t.startsWith(`#${i} `))).toBe(true)
    expect(lasts.filter(Boolean)).toHaveLength(1)
    expect(lasts.at(-1)).toBe(true)
    for (let i = 1; i < 200; i++) expect(paced.sentAt[i]!).toBeGreaterThanOrEqual(paced.sentAt[i - 1]!)
  })

  it('counts only the messages after the warm-up, each from its own send', async () => {
    const paced = new PacedSends(2000, 200, 0.05, ownCpu)
    await paced.run(() => {})
    await paced.stop('test')
    expect(paced.from).toBe(100)
    const arrivedAt = paced.sentAt.map((t, i) => t + (i < 100 ? 1000 : i === 199 ? 9 : 5))
    const lat = paced.latencies(arrivedAt)
    expect(lat).toHaveLength(100)
    const r = paced.summary(lat)
    expect(r.messages).toBe(100)
    expect(r.p50Ms).toBeCloseTo(5, 6)
    expect(r.maxMs).toBeCloseTo(9, 6)
    expect(r.deviceCpuUsPerMessage).toBeGreaterThanOrEqual(0)
    expect(r.coresBusy).toBeGreaterThanOrEqual(0)
  })
})
