import { describe, expect, it } from 'vitest'
import { type BookkeepingHost, BookkeepingWrites } from '../../src/client/bookkeeping-writes.js'
import type { Put } from '../../src/client/own-messages.js'

/** A receive chain that runs each job in order, and the commits it issued. */
function setup() {
  const commits: Put[][] = []
  let chain: Promise<void> = Promise.resolve()
  let positions = 1
  const host: BookkeepingHost = {
    afterIncoming: (job) => {
      chain = chain.then(job).then(() => undefined)
    },
    storeBookkeeping: (puts) => commits.push(puts),
    recordSeqsRow: () => ['recordSeqs', Uint8Array.of(positions)],
  }
  return {
    writes: new BookkeepingWrites(host),
    commits,
    /** What the receive chain has queued so far, run. */
    settled: () => chain,
    /** Record positions move on (as received pages bring them). */
    moveOn: () => positions++,
  }
}

const turn = () => new Promise((r) => setTimeout(r, 5))

describe('bookkeeping writes', () => {
  it('stores the writes of one event-loop turn in one commit, the later write of a key winning', async () => {
    const { writes, commits, settled } = setup()
    writes.add([['a', Uint8Array.of(1)]])
    writes.add([
      ['b', Uint8Array.of(2)],
      ['a', null],
    ])
    await turn()
    await settled()
    expect(commits).toEqual([
      [
        ['a', null],
        ['b', Uint8Array.of(2)],
      ],
    ])
    writes.add([['c', Uint8Array.of(3)]])
    await turn()
    await settled()
    expect(commits).toHaveLength(2)
  })

  it('stores record positions with the next flush, as they stand when it is written', async () => {
    const { writes, commits, settled, moveOn } = setup()
    writes.recordSeqsMoved()
    await turn()
    expect(commits).toEqual([])
    writes.add([['a', Uint8Array.of(1)]])
    moveOn()
    await turn()
    await settled()
    expect(commits).toEqual([
      [
        ['a', Uint8Array.of(1)],
        ['recordSeqs', Uint8Array.of(2)],
      ],
    ])
  })

  it('flushes at once when asked (closing), and writes nothing when nothing is pending', async () => {
    const { writes, commits, settled } = setup()
    writes.flush()
    writes.recordSeqsMoved()
    writes.flush()
    await settled()
    expect(commits).toEqual([[['recordSeqs', Uint8Array.of(1)]]])
    writes.add([['a', Uint8Array.of(1)]])
    writes.flush()
    await turn()
    await settled()
    expect(commits).toHaveLength(2)
  })
})
