import { describe, expect, it } from 'vitest'
import type { BusMessage, FanoutBus } from '../../src/relay/bus/fanout-bus.js'

const until = async (fn: () => boolean, ms = 3000) => {
  const start = Date.now()
  while (!fn()) {
    if (Date.now() - start > ms) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** Every fan-out bus passes this suite. `connect(node)` joins a fresh, isolated bus as `node`. */
export function runFanoutBusConformance(name: string, connect: (node: string) => Promise<FanoutBus>, options: { killConnections?: () => Promise<void> } = {}) {
  describe(name, () => {
    it('delivers each kind of message to the other nodes, not back to the sender', async () => {
      const a = await connect('a')
      const b = await connect('b')
      const c = await connect('c')
      const got: Record<string, BusMessage[]> = { a: [], b: [], c: [] }
      a.subscribe((m) => got.a!.push(m))
      b.subscribe((m) => got.b!.push(m))
      c.subscribe((m) => got.c!.push(m))
      const sent: BusMessage[] = [
        { kind: 'rows', room: 'room-aaaaaaaaaaaaaaaa', node: 'a', seq: 42 },
        { kind: 'receipts', room: 'room-aaaaaaaaaaaaaaaa', node: 'a', entry: { device: 'dev', stored: 3, read: 2, storedAt: 1000, readAt: 2000 } },
        { kind: 'records', room: 'room-aaaaaaaaaaaaaaaa', node: 'a' },
        { kind: 'member', room: 'room-aaaaaaaaaaaaaaaa', node: 'a', device: 'dev' },
        { kind: 'awareness', room: 'room-aaaaaaaaaaaaaaaa', node: 'a', message: Uint8Array.of(5, 1, 2, 3) },
      ]
      for (const m of sent) await a.publish(m)
      await until(() => got.b!.length === sent.length && got.c!.length === sent.length)
      expect(got.b).toEqual(sent)
      expect(got.c).toEqual(sent)
      await new Promise((r) => setTimeout(r, 50))
      expect(got.a).toEqual([])
      expect(a.ready() && b.ready()).toBe(true)
      await Promise.all([a.close(), b.close(), c.close()])
    })

    it('keeps order from one publisher', async () => {
      const a = await connect('a')
      const b = await connect('b')
      const seqs: number[] = []
      b.subscribe((m) => m.kind === 'rows' && seqs.push(m.seq))
      for (let i = 1; i <= 200; i++) await a.publish({ kind: 'rows', room: 'room-bbbbbbbbbbbbbbbb', node: 'a', seq: i })
      await until(() => seqs.length === 200)
      expect(seqs).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
      await Promise.all([a.close(), b.close()])
    })

    it('stops delivering after close', async () => {
      const a = await connect('a')
      const b = await connect('b')
      const got: BusMessage[] = []
      b.subscribe((m) => got.push(m))
      await b.close()
      await a.publish({ kind: 'records', room: 'room-cccccccccccccccc', node: 'a' })
      await new Promise((r) => setTimeout(r, 100))
      expect(got).toEqual([])
      await a.close()
    })

    if (options.killConnections) {
      it('tells its node after a reconnect, so the node re-reads what it may have missed', async () => {
        const a = await connect('a')
        let reconnects = 0
        a.onReconnect(() => reconnects++)
        await options.killConnections!()
        await until(() => reconnects > 0, 5000)
        const b = await connect('b')
        const got: BusMessage[] = []
        a.subscribe((m) => got.push(m))
        await b.publish({ kind: 'rows', room: 'room-dddddddddddddddd', node: 'b', seq: 1 })
        await until(() => got.length === 1)
        await Promise.all([a.close(), b.close()])
      })
    }
  })
}
