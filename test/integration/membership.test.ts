import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import type { Conversation } from '../../src/client/index.js'
import { decodeInviteToken } from '../../src/client/invite-token.js'
import { encodePage } from '../../src/relay/rows.js'
import { openSqliteRelayStore } from '../../src/relay/store/sqlite-store.js'
import { decryptEnvelope, readEnvelope } from '../../src/shared/envelope.js'
import {
  AdmissionKind,
  encodeAdmission,
  encodeEpochBody,
  encodeJoinBody,
  encodeMemberChangeBody,
  encodeRecord,
  RecordKind,
  readAddBody,
  readEpochBody,
  readInviteBody,
  readRecord,
  recordSigningPayload,
} from '../../src/shared/records.js'
import { fromBase64Url, SignatureDomain, signWithDomain, toBase64Url } from '../../src/shared/crypto/index.js'
import { envelopeKey } from '../../src/shared/outer-keys.js'
import { FrameType, writeFrame } from '../../src/shared/wire.js'
import { type Client, pair, rawDevice, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

/** Everything a holder of `keys` can read from a copy of the relay's database. */
async function readWithKeys(dbPath: string, room: string, keys: Map<number, Uint8Array>): Promise<string[]> {
  const store = openSqliteRelayStore(dbPath)
  const rows = await store.readRows(room, 0, 1_000_000)
  await store.close()
  const outer = new Y.Doc()
  for (const row of rows) Y.applyUpdate(outer, encodePage([row]))
  const inner = new Y.Doc()
  for (const bytes of outer.getMap<Uint8Array>('log').values()) {
    try {
      const h = readEnvelope(bytes)
      const key = keys.get(h.epoch)
      if (key) Y.applyUpdate(inner, decryptEnvelope(room, h, key))
    } catch {
      // not readable with these keys
    }
  }
  return [...inner.getMap<{ t: string }>('messages').values()].map((m) => m.t)
}

const signRecordAs = (c: Client) => (c as unknown as { signRecord: (k: number, b: Uint8Array) => Promise<Uint8Array> }).signRecord.bind(c)
const writeRecordsOf = (conv: Conversation) => (conv as unknown as { writeRecords: (r: Uint8Array[]) => Promise<void> }).writeRecords.bind(conv)

/** Alice creates a conversation, Bob and then Carol join it by the same invite; all online. */
async function trio(world: World) {
  const two = await pair(world)
  const carol = await world.client('carol')
  const carolConv = await carol.join(two.invite)
  return { ...two, carol, carolConv }
}

describe('membership and key epochs', () => {
  it('removing Bob: his live connection stops at once, and his keys plus the relay database read nothing sent after — also what Carol wrote offline before she learned of it', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv, carol, carolConv } = await trio(world)
    await aliceConv.send('before removal')
    await until(() => texts(bobConv).includes('before removal') && texts(carolConv).includes('before removal'))
    carol.disconnect()
    await until(() => carol.connection === 'offline')
    await carolConv.send('carol offline secret')
    await aliceConv.removeMember(bob.userId)
    await until(() => world.errors.get(bob)!.some((e) => /removed|not member|not a member/.test(e.message)), 5000, 'bob told')
    expect(aliceConv.members().map((m) => m.userId)).not.toContain(bob.userId)
    await aliceConv.send('after removal')
    carol.connect()
    await until(() => texts(aliceConv).includes('carol offline secret'), 10_000, 'carol re-sealed and delivered')
    await until(() => texts(carolConv).includes('after removal'), 10_000, 'carol has the new key')
    await new Promise((r) => setTimeout(r, 300))
    expect(texts(bobConv)).not.toContain('after removal')
    expect(texts(bobConv)).not.toContain('carol offline secret')
    // Bob's keys against a full copy of the relay's database.
    const readable = await readWithKeys(world.dbPath, aliceConv.id, bobConv.keys())
    expect(readable).toContain('before removal')
    expect(readable).not.toContain('after removal')
    expect(readable).not.toContain('carol offline secret')
    expect(aliceConv.epoch).toBe(1)
    void alice
  })

  it("'from-join': Carol, invited after 50 messages, sees only what followed; with 'full' Dave sees all 50", async () => {
    world = new World()
    await world.relay()
    const { aliceConv, bobConv } = await pair(world)
    for (let i = 0; i < 50; i++) await aliceConv.send(`old ${i}`)
    await until(() => texts(bobConv).length === 50)
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite({ history: 'from-join' }))
    const dave = await world.client('dave')
    const daveConv = await dave.join(await aliceConv.invite({ history: 'full' }))
    await aliceConv.send('new for everyone')
    await until(() => texts(carolConv).includes('new for everyone') && texts(daveConv).includes('new for everyone') && texts(bobConv).includes('new for everyone'), 10_000)
    expect(texts(carolConv).filter((t) => t.startsWith('old'))).toEqual([])
    expect(texts(daveConv).filter((t) => t.startsWith('old'))).toHaveLength(50)
    const readable = await readWithKeys(world.dbPath, aliceConv.id, carolConv.keys())
    expect(readable.filter((t) => t.startsWith('old'))).toEqual([])
  })

  it("'from-join': newcomers see the title and the names of members who spoke before they came", async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    await aliceConv.send('before anyone new')
    await until(() => texts(bobConv).includes('before anyone new'))
    // By invite, and added by an admin: both start an epoch the newcomer reads from.
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite({ history: 'from-join' }))
    const dave = await world.client('dave')
    const discovered = new Promise<Conversation>((resolve) => dave.on('conversation', (c) => c.id === aliceConv.id && resolve(c)))
    await aliceConv.addMember(await dave.publicIdentity(), { history: 'from-join' })
    const daveConv = await discovered
    await bobConv.send('bob after they came')
    const names = (conv: Conversation) => Object.fromEntries(conv.members().map((m) => [m.userId, m.name]))
    for (const conv of [carolConv, daveConv]) {
      await until(() => conv.title === 'Trip' && names(conv)[alice.userId] === 'alice' && names(conv)[bob.userId] === 'bob', 10_000, 'title and names')
      await until(() => conv.messages().some((m) => m.text === 'bob after they came'))
      expect(conv.messages().find((m) => m.text === 'bob after they came')?.authorName).toBe('bob')
      expect(texts(conv)).not.toContain('before anyone new')
    }
    // Carol, a newcomer herself, says her name again for Dave, who came after her.
    await until(() => names(daveConv)[carol.userId] === 'carol', 10_000, "carol's name at dave")
    // Once an epoch a person, by whoever was there: Carol came at epoch 1, Dave at 2.
    const said = (conv: Conversation) => [...conv.doc.getMap('profiles').keys(), ...[...conv.doc.getMap('meta').keys()].map((k) => `meta:${k}`)].sort()
    const expected = [alice.userId, bob.userId, carol.userId, dave.userId, ...['1', '2'].flatMap((e) => [`${alice.userId}@${e}`, `${bob.userId}@${e}`, `meta:title@${e}`]), `${carol.userId}@2`, 'meta:title'].sort()
    await until(() => said(aliceConv).length === expected.length, 10_000, 'everything said again at alice')
    expect(said(aliceConv)).toEqual(expected)
    // Not again at the next start.
    await bob.close()
    const bobAgain = await world.client('bob')
    const bobConv2 = (await bobAgain.conversations()).find((c) => c.id === aliceConv.id)!
    await bobConv2.send('bob back')
    await until(() => texts(carolConv).includes('bob back'))
    expect(said(bobConv2)).toEqual(expected)
    expect(said(carolConv).filter((k) => k.includes('@'))).toEqual(expected.filter((k) => k.includes('@')))
    // What came before their keys is no error of theirs: the app showed one per catch-up.
    for (const newcomer of [carol, dave]) expect(world.errors.get(newcomer)!.map((e) => e.message)).toEqual([])
    // A title given after that reaches everyone, the newcomers too.
    await bobConv2.setTitle('Lisbon')
    for (const conv of [aliceConv, carolConv, daveConv]) await until(() => conv.title === 'Lisbon', 10_000, 'the new title')
    await expect(bobConv2.setTitle('x'.repeat(1025))).rejects.toMatchObject({ code: 'invalid_argument' })
    await expect(alice.createConversation({ title: 'é'.repeat(513) })).rejects.toMatchObject({ code: 'invalid_argument' })
  })

  it("a 'full' invite used while its admin is away, then a key change by a member: the joiner still gets the epochs in between, and reads them from a snapshot", async () => {
    world = new World()
    await world.relay()
    const quiet = { compaction: false as const }
    const alice = await world.client('alice', quiet)
    const bob = await world.client('bob', quiet)
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    const aliceConv = await alice.createConversation({ title: 'T' })
    const bobConv = await bob.join(await aliceConv.invite())
    const carolInvite = await aliceConv.invite()
    await aliceConv.rotateKey()
    await until(() => bobConv.epoch === 1 && bobConv.keys().has(1), 10_000, 'bob at epoch 1')
    for (let i = 0; i < 20; i++) await bobConv.send(`epoch 1 #${i}`)
    await until(() => texts(aliceConv).length === 20, 10_000, 'alice has all')
    await aliceConv.writeSnapshot()
    // The relay keeps epoch 1's messages only in the snapshot from now on.
    await until(() => world.logLines.some((l) => l.includes('"compacted"')), 10_000, 'compacted')
    await alice.close()
    // Carol joins by the invite of epoch 0 while Alice is away: she holds epoch 0's key only.
    const carol = await world.client('carol', quiet)
    const carolConv = await carol.join(carolInvite)
    // Bob changes the key: epoch 2 is wrapped for Carol, epoch 1 still is not.
    await bobConv.rotateKey()
    await until(() => carolConv.keys().has(2), 10_000, 'carol holds epoch 2')
    await bobConv.writeSnapshot()
    expect(carolConv.keys().has(1)).toBe(false)
    // Alice comes back and gives Carol what her invite could not carry.
    const aliceAgain = await world.client('alice', { ...quiet, storage: join(world.dir, 'alice.db') })
    await until(async () => (await aliceAgain.conversations()).length === 1, 10_000, 'alice back')
    await until(() => carolConv.keys().has(1), 15_000, 'carol gets epoch 1')
    await until(() => texts(carolConv).filter((t) => t.startsWith('epoch 1')).length === 20, 15_000, 'carol reads epoch 1')
  }, 60_000)

  it("a 'full' invite's joiner reads live what was said in the epoch it lacked once an admin is back, and what followed at once", async () => {
    world = new World()
    await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    await aliceConv.send('epoch 0')
    const invite = await aliceConv.invite({ history: 'full' })
    await until(() => texts(bobConv).includes('epoch 0'))
    alice.disconnect()
    await bobConv.rotateKey()
    await until(() => bobConv.epoch === 1 && bobConv.keys().has(1), 5000, 'epoch 1')
    const carol = await world.client('carol')
    const carolConv = await carol.join(invite)
    await until(() => bobConv.members().length === 3, 5000, 'bob folds the join')
    await bobConv.send('in epoch 1, Carol here')
    await bobConv.rotateKey()
    await until(() => bobConv.epoch === 2 && bobConv.keys().has(2), 5000, 'epoch 2')
    await bobConv.send('in epoch 2')
    // Bob wrote epoch 2 from a fresh inner client id: it does not wait behind epoch 1 in Yjs.
    await until(() => texts(carolConv).includes('in epoch 2'), 15_000, 'carol reads epoch 2 at once')
    expect(texts(carolConv)).not.toContain('in epoch 1, Carol here')
    // Waiting for the key is no error of hers.
    expect(world.errors.get(carol)!.map((e) => e.message)).toEqual([])
    alice.connect()
    await until(() => texts(carolConv).includes('in epoch 1, Carol here'), 20_000, 'carol reads epoch 1 once alice welcomes her')
    expect(texts(carolConv)).toEqual(['epoch 0', 'in epoch 1, Carol here', 'in epoch 2'])
  }, 60_000)

  it('ignores a forged record everywhere: signed by a non-admin, or not validly signed', async () => {
    world = new World()
    const relay = await world.relay()
    const { bob, aliceConv, bobConv, carol, carolConv } = await trio(world)
    await until(() => aliceConv.members().length === 3 && bobConv.members().length === 3)
    // Bob is a member, not an admin: his "remove Carol" is refused by the relay and by clients.
    const forged = await signRecordAs(bob)(RecordKind.Remove, encodeMemberChangeBody({ room: aliceConv.id, userPub: fromBase64Url(carol.userId), at: Date.now() }))
    await writeRecordsOf(bobConv)([forged])
    await until(() => relay.metrics.rejectedCount('record refused') >= 1, 5000, 'relay refuses')
    // A record whose signature does not verify.
    const broken = forged.slice()
    broken[broken.length - 1]! ^= 1
    await writeRecordsOf(bobConv)([broken])
    await until(() => relay.metrics.rejectedCount('record refused') >= 2, 5000, 'relay refuses the broken one')
    await aliceConv.send('carol is still here')
    await until(() => texts(carolConv).includes('carol is still here'))
    expect(aliceConv.members().map((m) => m.userId)).toContain(carol.userId)
    expect(carolConv.members().map((m) => m.userId)).toContain(carol.userId)
  })

  it('refuses expired, used-up and revoked invites with clear errors; an invite works while every admin is offline', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    await until(() => alice.connection === 'online')
    const conv = await alice.createConversation({ title: 'invites' })
    const expired = await conv.invite({ expiresIn: 1 })
    const single = await conv.invite({ uses: 1 })
    const revoked = await conv.invite()
    const plain = await conv.invite()
    await conv.revokeInvite(revoked)
    await new Promise((r) => setTimeout(r, 50))
    await alice.close()
    // Every admin offline from here on.
    const bob = await world.client('bob')
    await until(() => bob.connection === 'online')
    await expect(bob.join(expired)).rejects.toMatchObject({ code: 'invite_invalid', message: expect.stringMatching(/expired/) })
    await bob.join(single)
    const carol = await world.client('carol')
    await until(() => carol.connection === 'online')
    await expect(carol.join(single)).rejects.toMatchObject({ code: 'invite_invalid', message: expect.stringMatching(/used up/) })
    await expect(carol.join(revoked)).rejects.toMatchObject({ code: 'invite_invalid', message: expect.stringMatching(/revoked/) })
    const carolConv = await carol.join(plain)
    expect(carolConv.synced).toBe(true)
    // Told once, by the join's rejection: not again on `error` (an app toasting both said it twice).
    expect(world.errors.get(carol)!.map((e) => `${e.code}: ${e.message}`)).toEqual([])
  })

  it('refuses invite and addMember options it cannot honour as invalid_argument, writing nothing: no "0 uses" meaning unlimited, no misspelt history handing over everything', async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv } = await pair(world)
    const records = () => aliceConv.membershipState.invites.size
    const before = records()
    for (const options of [{ uses: 0 }, { uses: -1 }, { uses: 1.5 }, { expiresIn: 0 }, { expiresIn: -1000 }, { expiresIn: Number.NaN }, { history: 'from_join' }, { history: 'none' }]) {
      await expect(aliceConv.invite(options as never)).rejects.toMatchObject({ code: 'invalid_argument' })
    }
    await expect(aliceConv.addMember(await bob.publicIdentity(), { history: 'from_join' } as never)).rejects.toMatchObject({ code: 'invalid_argument' })
    expect(records()).toBe(before)
    expect(aliceConv.epoch).toBe(0)
    await expect(aliceConv.invite({ uses: 1, expiresIn: 60_000, history: 'from-join' })).resolves.toMatch(/./)
  })

  it('gives both people the same safety number, and a different one for someone else', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    const n = aliceConv.safetyNumber(bob.userId)
    expect(n).toMatch(/^(\d{5} ){11}\d{5}$/)
    expect(bobConv.safetyNumber(alice.userId)).toBe(n)
    const mallory = await world.client('mallory')
    expect(aliceConv.safetyNumber(mallory.userId)).not.toBe(n)
    for (const bad of ['', 'bob', `${bob.userId}x`, bob.userId.slice(1), `${bob.userId.slice(0, 42)}!`, 42 as never])
      expect(() => aliceConv.safetyNumber(bad), String(bad)).toThrow(expect.objectContaining({ code: 'invalid_argument' }))
  })
})

/** Alice rotates the key every 2 messages (she is the admin), Bob never: both in one conversation. */
async function aliceRotatingEveryTwoWithBob(title: string) {
  world = new World()
  await world.relay()
  const alice = await world.client('alice', { keyRotation: { messages: 2 } })
  const bob = await world.client('bob', { keyRotation: { messages: 1e9 } })
  await until(() => alice.connection === 'online' && bob.connection === 'online')
  const a = await alice.createConversation({ title })
  const b = await bob.join(await a.invite())
  await until(() => a.members().length === 2, 10_000, 'bob joined at alice')
  return { bob, a, b }
}

describe('scheduled key rotation', () => {
  it('starts a new epoch after the message threshold, and old messages stay readable', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice', { keyRotation: { messages: 10 } })
    const bob = await world.client('bob', { keyRotation: { messages: 10 } })
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    const a = await alice.createConversation({ title: 'rotating' })
    const b = await bob.join(await a.invite())
    for (let i = 0; i < 25; i++) await a.send(`r${i}`)
    await until(() => texts(b).length === 25, 10_000)
    await until(() => a.epoch >= 2 && b.epoch === a.epoch, 10_000, 'rotated twice')
    expect(texts(b)).toEqual(Array.from({ length: 25 }, (_, i) => `r${i}`))
    // A device that reloads still reads the old epochs' messages with the keys it kept.
    const convId = b.id
    await bob.close()
    const bob2 = await world.client('bob')
    const b2 = (await bob2.conversations()).find((c) => c.id === convId)!
    expect(texts(b2)).toHaveLength(25)
    expect([...b2.keys().keys()].sort()).toEqual(expect.arrayContaining([0, 1, 2]))
  })

  it('counts messages sent together one by one, not as one batch', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice', { keyRotation: { messages: 10 } })
    await until(() => alice.connection === 'online')
    const a = await alice.createConversation({ title: 'rotating together' })
    // One batch (one update, one envelope) of 25 messages: past the threshold of 10.
    await Promise.all(Array.from({ length: 25 }, (_, i) => a.send(`t${i}`)))
    await until(() => a.epoch >= 1, 10_000, 'rotated after a batch of 25')
  })

  it('writes through scheduled rotations from one inner client id, up to 16 epochs, and takes a fresh one for a from-join invite', async () => {
    const { a, b } = await aliceRotatingEveryTwoWithBob('one writer, many epochs')
    await a.send('after the join')
    await until(() => texts(b).length === 1, 10_000)
    const first = a.doc.clientID
    // Rotations every 2 messages: epochs 1…12 write from the id Alice had after Bob joined.
    for (let i = 0; a.epoch < 12; i++) {
      await a.send(`m${i}`)
      if (i > 200) throw new Error(`only ${a.epoch} epochs after 200 messages`)
    }
    expect(a.doc.clientID).toBe(first)
    // The 16th epoch past it starts a fresh id (an epoch this device could not open would
    // otherwise hold back what follows for good).
    const epochOfFirst = a.epoch
    for (let i = 0; a.epoch < 20; i++) await a.send(`n${i}`)
    expect(a.doc.clientID).not.toBe(first)
    expect(epochOfFirst).toBeLessThan(16)
    await until(() => texts(b).length === texts(a).length, 10_000, 'bob has them all')
    expect(texts(b)).toEqual(texts(a))
    // Alice's messages came from two client ids (plus the one that made the conversation,
    // before Bob joined), not one an epoch: 20 epochs made 21 before.
    const writers = new Set<number>()
    for (const client of b.doc.store.clients.keys()) writers.add(client)
    expect(writers.size).toBeLessThanOrEqual(5)
    // A 'from-join' invite: joiners will read from its epoch only, so both devices move on.
    const beforeInvite = { alice: a.doc.clientID, bob: b.doc.clientID }
    await a.invite({ history: 'from-join' })
    await until(() => b.doc.clientID !== beforeInvite.bob, 10_000, 'bob folded the invite')
    expect(a.doc.clientID).not.toBe(beforeInvite.alice)
  })

  it("a device that cannot open one epoch shows a writer's later messages once the writer's client id changes, within 16 epochs", async () => {
    const { bob, a, b } = await aliceRotatingEveryTwoWithBob('one bad wrap')
    await a.send('before')
    await until(() => texts(b).includes('before'), 10_000)
    const first = a.doc.clientID
    // Alice (a member) wraps her next epoch's key badly for Bob's device: he never has it.
    type Book = { newEpoch: (exclude?: string) => { epoch: number; key: Uint8Array; body: Uint8Array } }
    const book = (a as unknown as { book: Book }).book
    const honest = book.newEpoch.bind(book)
    let badEpoch = -1
    book.newEpoch = (exclude) => {
      book.newEpoch = honest
      const next = honest(exclude)
      const body = readEpochBody(next.body)
      body.wrapped.get(bob.deviceId)![40]! ^= 1
      badEpoch = next.epoch
      return { ...next, body: encodeEpochBody({ ...body, wrapped: [...body.wrapped].map(([d, w]) => [fromBase64Url(d), w] as [Uint8Array, Uint8Array]) }) }
    }
    const sentIn = new Map<string, number>()
    for (let i = 0; a.doc.clientID === first; i++) {
      if (i > 200) throw new Error(`alice's client id unchanged after 200 messages (epoch ${a.epoch})`)
      await a.send(`m${i}`)
      sentIn.set(`m${i}`, a.epoch)
    }
    expect(badEpoch).toBeGreaterThan(0)
    expect(b.keys().has(badEpoch)).toBe(false)
    // The first message from her fresh id, and the rest after it, reach Bob.
    for (let i = 0; i < 4; i++) await a.send(`fresh ${i}`)
    await until(() => texts(b).includes('fresh 3'), 10_000, "bob shows alice's messages from her fresh client id")
    // What her old id wrote from the bad epoch on waits for clocks Bob can never open: the cost
    // of one id through many epochs, bounded by the 16.
    const shown = new Set(texts(b))
    const lacking = [...sentIn].filter(([t]) => !shown.has(t)).map(([, epoch]) => epoch)
    expect(lacking.length).toBeGreaterThan(0)
    expect(Math.min(...lacking)).toBeGreaterThanOrEqual(badEpoch - 1)
    expect(Math.max(...lacking) - badEpoch).toBeLessThan(16)
    expect(world.errors.get(bob)!.some((e) => e.message.includes(`no key for epoch ${badEpoch}`))).toBe(true)
  })

  it('makes the longest-standing member an admin when the only admin leaves, who then invites and changes the key', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv, invite } = await pair(world)
    const carol = await world.client('carol')
    const carolConv = await carol.join(invite)
    await until(() => bobConv.members().length === 3 && carolConv.members().length === 3, 10_000, 'three members')
    const epoch = bobConv.epoch
    await aliceConv.leave()
    // Bob came first: an admin now, on every device; Carol stays a member.
    await until(() => bobConv.members().find((m) => m.userId === bob.userId)?.role === 'admin', 10_000, 'bob an admin')
    expect(carolConv.members().map((m) => [m.name, m.role])).toEqual(expect.arrayContaining([['bob', 'admin'], ['carol', 'member']]))
    expect(bobConv.members().some((m) => m.userId === alice.userId)).toBe(false)
    // As an admin Bob changes the key Alice held, and can invite.
    await until(() => bobConv.epoch > epoch, 10_000, 'a new key')
    await expect(bobConv.invite()).resolves.toMatch(/./)
  })

  it('changes the key when a member leaves; the one who left is told quietly (refusal, no error), also after a restart', async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv } = await pair(world)
    await bobConv.leave()
    await until(() => aliceConv.epoch === 1, 5000, 'admin rotated')
    expect(aliceConv.members().map((m) => m.userId)).not.toContain(bob.userId)
    await until(() => bobConv.refusal !== undefined, 5000, 'bob told')
    expect(bobConv.refusal).toMatchObject({ code: 'refused', message: 'you left this conversation' })
    await expect(bobConv.send('after leaving')).rejects.toMatchObject({ code: 'refused' })
    await bob.close()
    const again = await world.client('bob')
    const [conv] = await again.conversations()
    await until(() => conv!.refusal !== undefined, 5000, 'told again after a restart')
    await new Promise((r) => setTimeout(r, 200))
    expect(world.errors.get(bob)).toEqual([])
    expect(world.errors.get(again)).toEqual([])
  })

  it('a member who leaves while offline is told at once, and what they send then is refused at once, not kept waiting', async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv } = await pair(world)
    bob.disconnect()
    await until(() => bob.connection === 'offline')
    await bobConv.leave()
    expect(bobConv.refusal).toMatchObject({ code: 'refused', message: 'you left this conversation' })
    await expect(bobConv.send('after leaving')).rejects.toMatchObject({ code: 'refused', message: 'you left this conversation' })
    bob.connect()
    await until(() => aliceConv.members().length === 1, 10_000, 'the leave reaches the others')
    expect(world.errors.get(bob)).toEqual([])
  })

  it('what a member sent offline before leaving offline goes with the leave, and shows sent, not failed', async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv } = await pair(world)
    bob.disconnect()
    await until(() => bob.connection === 'offline')
    const m = await bobConv.send('said before leaving')
    await bobConv.leave()
    // Sealed before the leave, it stands ahead of it in Bob's log: not failed while it waits.
    expect(bobConv.message(m.id)?.status).toBe('pending')
    bob.connect()
    await until(() => aliceConv.members().length === 1, 10_000, 'the leave reaches the others')
    await until(() => texts(aliceConv).includes('said before leaving'), 10_000, 'alice has it')
    // The relay's ✓ comes before its denial of the one who left (before, the denial came first,
    // the ✓ was dropped, and Bob saw 'failed' for what everyone else received).
    await until(() => bobConv.message(m.id)?.status === 'sent', 10_000, 'bob sees it sent')
    expect(bobConv.refusal).toMatchObject({ code: 'refused', message: 'you left this conversation' })
    expect(world.errors.get(bob)).toEqual([])
  })

  it('an admin adding someone back right after they left, before the key changed, adds them under the new key', async () => {
    world = new World()
    const relay = await world.relay()
    const { bob, aliceConv, bobConv } = await pair(world)
    const identity = await bob.publicIdentity()
    await bobConv.leave()
    // Alice adds him back the moment she sees him gone (her list's change), before the
    // rotation his leave made due has landed.
    const added = new Promise<boolean>((resolve, reject) => {
      const off = aliceConv.subscribe(() => {
        if (aliceConv.membershipState.members.has(bob.userId)) return
        off()
        const due = aliceConv.membershipState.rotationDue
        aliceConv.addMember(identity).then(() => resolve(due), reject)
      })
    })
    expect(await added).toBe(true)
    expect(aliceConv.epoch).toBe(1)
    await aliceConv.send('welcome back')
    await until(() => aliceConv.messages().at(-1)?.status === 'sent', 5000, 'sent')
    expect(relay.metrics.rejectedCount('record refused')).toBe(0)
    expect(aliceConv.members().map((m) => m.userId)).toContain(bob.userId)
  })
})

describe('a member removed and added back', () => {
  it('their device opens the conversation anew at once (the conversation event), reads and sends, with no restart', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    await aliceConv.send('before removal')
    await until(() => texts(bobConv).includes('before removal'))
    // The app is told (subscribe), not left to find out at its next render.
    const told = new Promise<void>((resolve) => bobConv.subscribe(() => bobConv.refusal && resolve()))
    await aliceConv.removeMember(bob.userId)
    await until(() => bobConv.refusal !== undefined, 10_000, 'bob told he was removed')
    await told
    const reopened = new Promise<Conversation>((resolve) => bob.on('conversation', (c) => c.id === aliceConv.id && resolve(c)))
    await aliceConv.addMember(await bob.publicIdentity())
    const again = await reopened
    expect(again).not.toBe(bobConv)
    await aliceConv.send('after bob is back')
    await until(() => texts(again).includes('after bob is back'), 10_000, 'bob reads what follows')
    expect(again.refusal).toBeUndefined()
    expect(texts(again)).toContain('before removal')
    expect((await bob.conversations()).filter((c) => c.id === aliceConv.id)).toEqual([again])
    await again.send('glad to be back')
    await until(() => texts(aliceConv).includes('glad to be back'), 10_000, 'alice reads bob')
    expect(alice.userId).not.toBe(bob.userId)
  })
})

describe('concurrent epoch changes', () => {
  it('resolve to one key: the relay keeps the first, the other side re-seals, nothing is lost, and nobody is told of an error', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    alice.disconnect()
    bob.disconnect()
    await until(() => alice.connection === 'offline' && bob.connection === 'offline')
    await aliceConv.rotateKey()
    await bobConv.rotateKey()
    for (let i = 0; i < 5; i++) {
      await aliceConv.send(`a${i}`)
      await bobConv.send(`b${i}`)
    }
    alice.connect()
    await until(() => alice.connection === 'online')
    bob.connect()
    await until(() => texts(aliceConv).length === 10 && texts(bobConv).length === 10, 10_000, 'all 10 on both')
    expect(texts(aliceConv)).toEqual(texts(bobConv))
    expect(aliceConv.epoch).toBe(bobConv.epoch)
    expect([...aliceConv.keys().get(aliceConv.epoch)!]).toEqual([...bobConv.keys().get(bobConv.epoch)!])
    expect(relay.metrics.rejectedCount('record refused')).toBe(1)
    // The losing epoch record is housekeeping: no error for the app on either side.
    expect([...world.errors.get(alice)!, ...world.errors.get(bob)!]).toEqual([])
  })
})

describe('admission at the relay', () => {
  /** An `open` admission for `token` whose join record names `joinerCertificate` (signed with the invite's secret, as a joiner does). */
  async function admissionFor(token: string, joinerCertificate: Uint8Array) {
    const invite = decodeInviteToken(token)
    const { invitePub } = readInviteBody(readRecord(invite.inviteRecord).body)
    const body = encodeJoinBody({ room: invite.room, invitePub, joiner: joinerCertificate, joinedAt: Date.now() })
    const signature = await signWithDomain(SignatureDomain.Join, invite.inviteSecret, recordSigningPayload(RecordKind.Join, body))
    const join = encodeRecord(RecordKind.Join, body, new Uint8Array(0), signature)
    return encodeAdmission({ kind: AdmissionKind.Join, invite: invite.inviteRecord, join })
  }
  const answer = (d: { frames: Array<{ type: number }> }) => d.frames.find((f) => f.type === FrameType.Denied || f.type === FrameType.Opened)

  it('puts the records of a device it admits into the log, so every member sees it though it never writes them, and key rotation goes on', async () => {
    world = new World()
    const relay = await world.relay()
    const { bob, aliceConv, bobConv, invite } = await pair(world)
    await aliceConv.send('before removal')
    await until(() => texts(bobConv).includes('before removal'))
    // A device opens with Bob's invite and never writes its join into the log.
    const ghost = await rawDevice(world.url)
    ghost.ws.send(writeFrame({ type: FrameType.Open, room: aliceConv.id, admission: await admissionFor(invite, ghost.certificate) }))
    await until(() => answer(ghost) !== undefined, 5000, 'ghost answered')
    expect(answer(ghost)?.type).toBe(FrameType.Opened)
    const ghostUser = toBase64Url(ghost.user.publicKey)
    // Every member sees it: it can be removed like anyone.
    await until(() => aliceConv.members().some((m) => m.userId === ghostUser) && bobConv.members().some((m) => m.userId === ghostUser), 5000, 'the members see it')
    await aliceConv.removeMember(ghostUser)
    await aliceConv.removeMember(bob.userId)
    await aliceConv.send('after removal')
    await until(() => aliceConv.messages().some((m) => m.text === 'after removal' && m.status !== 'pending'), 10_000, 'sent')
    expect(aliceConv.epoch).toBeGreaterThanOrEqual(1)
    expect(relay.metrics.rejectedCount('record refused')).toBe(0)
    // Bob's keys read nothing said after.
    const readable = await readWithKeys(world.dbPath, aliceConv.id, bobConv.keys())
    expect(readable).toContain('before removal')
    expect(readable).not.toContain('after removal')
    ghost.ws.close()
  })

  it("refuses an open whose join names another device, and changes nothing: that device is no member, and the invite's use is not spent", async () => {
    world = new World()
    const relay = await world.relay()
    const alice = await world.client('alice')
    await until(() => alice.connection === 'online')
    const conv = await alice.createConversation({ title: 't' })
    const token = await conv.invite({ uses: 1 })
    const d1 = await rawDevice(world.url)
    const d2 = await rawDevice(world.url)
    d1.ws.send(writeFrame({ type: FrameType.Open, room: conv.id, admission: await admissionFor(token, d2.certificate) }))
    await until(() => answer(d1) !== undefined, 5000, 'd1 answered')
    expect(answer(d1)).toMatchObject({ type: FrameType.Denied, message: 'join record is for another device' })
    // D2 was not admitted by it: with no admission of its own it is not a member.
    d2.ws.send(writeFrame({ type: FrameType.Open, room: conv.id, admission: new Uint8Array(0) }))
    await until(() => answer(d2) !== undefined, 5000, 'd2 answered')
    expect(answer(d2)?.type).toBe(FrameType.Denied)
    // The one use is still there for an honest invitee, and the room is as the store says.
    const bob = await rawDevice(world.url)
    bob.ws.send(writeFrame({ type: FrameType.Open, room: conv.id, admission: await admissionFor(token, bob.certificate) }))
    await until(() => answer(bob) !== undefined, 5000, 'bob answered')
    expect(answer(bob)?.type).toBe(FrameType.Opened)
    await until(async () => ((await relay.store.loadRoom(conv.id))?.records.length ?? 0) >= 3, 5000, 'join stored')
    for (const d of [d1, d2, bob]) d.ws.close()
  })
})

describe('a record uploaded again', () => {
  /** writeRecords without its "already in the log" check: what a modified client can send. */
  async function writeRawRecords(conv: Conversation, records: Uint8Array[]) {
    const c = conv as unknown as {
      id: string
      outer: Y.Doc
      afterOutgoing<T>(job: () => Promise<T>): Promise<T>
      writeOuter(fn: (log: Y.Map<Uint8Array>, rec: Y.Map<Uint8Array>) => void): { updates: Uint8Array[] }
      commit(b: unknown): Promise<void>
      foldRecords(): Promise<void>
    }
    await c.afterOutgoing(async () => {
      const { updates } = c.writeOuter((_log, rec) => {
        for (const v of records) rec.set(envelopeKey(c.outer.clientID, Y.getState(c.outer.store, c.outer.clientID)), v)
      })
      await c.commit({ append: updates.map((bytes) => ({ convId: c.id, doc: 'outer' as const, bytes })) })
      await c.foldRecords()
    })
  }

  it("by a member who is no admin, an admin's old add, does not bring back the person removed since", async () => {
    world = new World()
    const relay = await world.relay()
    const { aliceConv, bobConv } = await pair(world)
    const carol = await world.client('carol')
    await until(() => carol.connection === 'online')
    await aliceConv.addMember(await carol.publicIdentity())
    await until(() => bobConv.members().some((m) => m.userId === carol.userId), 10_000, 'bob sees carol added')
    const records = (conv: Conversation) => (conv as unknown as { outer: Y.Doc }).outer.getMap<Uint8Array>('rec')
    const add = [...records(aliceConv).values()].find((b) => readRecord(b).kind === RecordKind.Add)!
    await aliceConv.removeMember(carol.userId)
    await until(() => bobConv.epoch === 1 && !bobConv.members().some((m) => m.userId === carol.userId), 10_000, 'carol removed at bob')
    expect(bobConv.isAdmin()).toBe(false)
    const rowsBefore = records(aliceConv).size
    await writeRawRecords(bobConv, [add])
    await until(() => records(aliceConv).size > rowsBefore, 10_000, 'the replay reached alice')
    // Counted once, where it first stood: Carol stays out, and the next key leaves her out too.
    expect(aliceConv.members().some((m) => m.userId === carol.userId)).toBe(false)
    expect(bobConv.members().some((m) => m.userId === carol.userId)).toBe(false)
    const refused = relay.metrics.rejectedCount('record refused')
    await aliceConv.rotateKey()
    await until(() => bobConv.epoch === 2, 10_000, 'the rotation reached bob')
    expect(relay.metrics.rejectedCount('record refused')).toBe(refused)
  })
})


describe('a member removed while offline', () => {
  it('comes back to a typed refusal: his offline sends fail, a new send is refused at once, and the others talk on', async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv, carolConv } = await trio(world)
    bob.disconnect()
    await until(() => bob.connection === 'offline')
    const offline = await bobConv.send('bob, offline')
    await aliceConv.removeMember(bob.userId)
    bob.connect()
    await until(() => bobConv.message(offline.id)?.status === 'failed', 10_000, 'his offline send failed')
    expect(world.errors.get(bob)!.map((e) => [e.code, e.message])).toEqual([['refused', 'relay refused the conversation: not member: removed from the conversation']])
    await expect(bobConv.send('bob, after')).rejects.toMatchObject({ code: 'refused', conversationId: bobConv.id })
    expect(texts(bobConv)).toEqual(['bob, offline'])
    await carolConv.send('carol, still here')
    await until(() => texts(aliceConv).includes('carol, still here'), 10_000, 'alice hears carol')
    expect(texts(aliceConv)).not.toContain('bob, offline')
  })

  it('stays out when the remover’s clock dated the removal before the invite he joined by, and the next key leaves him out', async () => {
    world = new World()
    const relay = await world.relay()
    const { bob, aliceConv, bobConv, invite, carolConv } = await trio(world)
    await until(() => aliceConv.members().length === 3 && carolConv.members().length === 3, 10_000, 'three members')
    const createdAt = readInviteBody(readRecord(decodeInviteToken(invite).inviteRecord).body).createdAt
    bob.disconnect()
    await until(() => bob.connection === 'offline')
    // What removeMember writes, from an admin device whose clock runs a minute slow.
    const remove = await signRecordAs(world.clients[0]!)(RecordKind.Remove, encodeMemberChangeBody({ room: aliceConv.id, userPub: fromBase64Url(bob.userId), at: createdAt - 60_000 }))
    await writeRecordsOf(aliceConv)([remove])
    await until(() => !carolConv.members().some((m) => m.userId === bob.userId), 10_000, 'bob removed at carol')
    await until(() => aliceConv.epoch === 1, 10_000, 'the removal rotated the key')
    // Bob's device reconnects with the admission it joined by.
    bob.connect()
    await until(() => world.errors.get(bob)!.some((e) => e.code === 'refused'), 10_000, 'bob refused')
    const refused = relay.metrics.rejectedCount('record refused')
    await aliceConv.rotateKey()
    await until(() => carolConv.epoch === 2, 10_000, 'the next rotation reached carol')
    expect(relay.metrics.rejectedCount('record refused')).toBe(refused)
    await aliceConv.send('after bob')
    await until(() => texts(carolConv).includes('after bob'), 10_000, 'carol reads it')
    expect(await readWithKeys(world.dbPath, aliceConv.id, bobConv.keys())).not.toContain('after bob')
  })
})

describe('an invite made before the key changed', () => {
  const addsFor = (conv: Conversation, userPub: string) =>
    [...(conv as unknown as { outer: Y.Doc }).outer.getMap<Uint8Array>('rec').values()].filter((b) => {
      const rec = readRecord(b)
      return rec.kind === RecordKind.Add && toBase64Url(readAddBody(rec.body).userPub) === userPub
    })

  it('gives its joiner the current key: one add record from the inviter’s device, and she reads and writes at once', async () => {
    world = new World()
    const relay = await world.relay()
    const { bob, aliceConv, invite } = await pair(world)
    await aliceConv.send('before')
    await aliceConv.removeMember(bob.userId)
    await until(() => aliceConv.epoch === 1, 5000, 'epoch 1')
    const carol = await world.client('carol')
    const carolConv = await carol.join(invite)
    await until(() => carolConv.keys().has(1), 10_000, 'carol holds the key of epoch 1')
    await aliceConv.send('after carol joined')
    await until(() => texts(carolConv).includes('after carol joined'), 10_000, 'carol reads it')
    expect(texts(carolConv)).toEqual(['before', 'after carol joined'])
    await carolConv.send('from carol')
    await until(() => texts(aliceConv).includes('from carol'), 10_000, 'alice reads carol')
    expect(relay.metrics.rejectedCount('stale epoch')).toBe(0)
    expect(addsFor(aliceConv, carol.userId)).toHaveLength(1)
    // The next fold (a restart of Alice's device) writes no second one.
    await aliceConv.send('still one')
    await until(() => texts(carolConv).includes('still one'), 10_000, 'carol reads on')
    expect(addsFor(aliceConv, carol.userId)).toHaveLength(1)
  })

  it('while the inviter’s device is away another admin’s gives the key, after a few seconds', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv, invite } = await pair(world)
    await aliceConv.makeAdmin(bob.userId)
    await until(() => bobConv.isAdmin(), 10_000, 'bob admin')
    await aliceConv.rotateKey()
    await until(() => bobConv.epoch === 1, 10_000, 'epoch 1 at bob')
    alice.disconnect()
    await until(() => alice.connection === 'offline')
    const carol = await world.client('carol')
    const carolConv = await carol.join(invite)
    await bobConv.send('bob to carol')
    await until(() => texts(carolConv).includes('bob to carol'), 15_000, 'carol reads bob')
    expect(addsFor(bobConv, carol.userId)).toHaveLength(1)
  }, 40_000)

  it('writes no add record for a joiner whose invite was made in the current epoch (its token holds the key)', async () => {
    world = new World()
    await world.relay()
    const { aliceConv, bobConv } = await pair(world)
    await aliceConv.rotateKey()
    await until(() => aliceConv.epoch === 1 && bobConv.epoch === 1, 10_000, 'epoch 1')
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite())
    await aliceConv.send('hello carol')
    await until(() => texts(carolConv).includes('hello carol'), 10_000, 'carol reads it')
    await new Promise((r) => setTimeout(r, 300))
    expect(addsFor(aliceConv, carol.userId)).toEqual([])
  })

  it('after scheduled rotations too (the invite link of the demo app, used days later)', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice', { keyRotation: { messages: 5 } })
    await until(() => alice.connection === 'online')
    const aliceConv = await alice.createConversation({ title: 'busy' })
    const link = await aliceConv.invite()
    for (let i = 0; i < 12; i++) await aliceConv.send(`m${i}`)
    await until(() => aliceConv.epoch >= 2, 10_000, 'two rotations')
    const carol = await world.client('carol')
    const carolConv = await carol.join(link)
    await aliceConv.send('welcome, carol')
    await until(() => texts(carolConv).includes('welcome, carol'), 10_000, 'carol reads the current epoch')
    expect(texts(carolConv)).toHaveLength(13)
    await carolConv.send('thanks')
    await until(() => texts(aliceConv).includes('thanks'), 10_000, 'alice reads carol')
  })
})

describe('two admins removing two members at once', () => {
  it('neither removed member holds a key of what was written after its removal: a remover offline meanwhile seals again under the next key', async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv, invite, carol, carolConv } = await trio(world)
    const dave = await world.client('dave')
    const daveConv = await dave.join(invite)
    await aliceConv.makeAdmin(bob.userId)
    await until(() => bobConv.isAdmin() && carolConv.members().length === 4 && daveConv.members().length === 4, 10_000, 'four members, two admins')
    bob.disconnect()
    await until(() => bob.connection === 'offline')
    await bobConv.removeMember(dave.userId)
    await bobConv.send('bob: dave is gone')
    // Meanwhile Alice removes Carol; her new epoch still wraps for Dave, whose removal she has not seen.
    await aliceConv.removeMember(carol.userId)
    await aliceConv.send('alice: carol is gone')
    await until(() => aliceConv.messages().some((m) => m.text === 'alice: carol is gone' && m.status !== 'pending'), 10_000, 'alice’s stored')
    bob.connect()
    await until(() => texts(aliceConv).includes('bob: dave is gone'), 15_000, 'bob’s message reaches alice')
    expect(await readWithKeys(world.dbPath, aliceConv.id, daveConv.keys())).not.toContain('bob: dave is gone')
    expect(await readWithKeys(world.dbPath, aliceConv.id, carolConv.keys())).not.toContain('alice: carol is gone')
    expect(aliceConv.members().map((m) => m.userId).sort()).toEqual([aliceConv.members()[0]!.userId, bob.userId].sort())
  })
})

describe('a member leaving while no admin is online', () => {
  it('a send still waiting for the new key when the app closes fails, and nothing of it goes out under the old key', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, bobConv, carolConv } = await trio(world)
    await until(() => bobConv.members().length === 3, 10_000, 'three members')
    alice.disconnect()
    await until(() => alice.connection === 'offline')
    await carolConv.leave()
    await until(() => bobConv.members().length === 2, 10_000, 'bob sees carol gone')
    const outcome = bobConv.send('after carol left').then(
      () => 'sent',
      (err: { code?: string }) => err.code,
    )
    await until(() => texts(bobConv).includes('after carol left'), 2000, 'shown at once')
    // Closed before Bob's turn to change the key comes.
    await bob.close()
    expect(await outcome).toBe('closed')
    const again = await world.client('bob', { storage: join(world.dir, 'bob.db') })
    const conv = await until(async () => (await again.conversations()).find((c) => c.id === bobConv.id))
    await conv.ready()
    await until(() => conv.epoch === 1, 10_000, 'the key changed')
    await conv.send('next')
    await until(() => conv.messages().every((m) => m.status !== 'pending'), 10_000, 'sent')
    expect(await readWithKeys(world.dbPath, bobConv.id, carolConv.keys())).not.toContain('after carol left')
  }, 40_000)

  it('another member changes the key after a moment; what was sent meanwhile waits for it, and the one who left cannot read it', async () => {
    world = new World()
    await world.relay()
    const { alice, aliceConv, bobConv, carolConv } = await trio(world)
    await until(() => bobConv.members().length === 3, 10_000, 'three members')
    alice.disconnect()
    await until(() => alice.connection === 'offline')
    await carolConv.leave()
    await until(() => bobConv.members().length === 2, 10_000, 'bob sees carol gone')
    expect(bobConv.epoch).toBe(0)
    // Shown at once, pending; stored (and so resolved) once sealed under the next key, which
    // Bob, no admin, starts after a moment.
    const sending = bobConv.send('after carol left')
    await until(() => texts(bobConv).includes('after carol left'), 2000, 'shown at once')
    expect(bobConv.messages().find((x) => x.text === 'after carol left')!.status).toBe('pending')
    const m = await sending
    expect(bobConv.epoch).toBe(1)
    await until(() => bobConv.message(m.id)?.status !== 'pending', 10_000, 'sent under it')
    expect(await readWithKeys(world.dbPath, bobConv.id, carolConv.keys())).not.toContain('after carol left')
    alice.connect()
    await until(() => texts(aliceConv).includes('after carol left'), 10_000, 'alice reads it')
  }, 40_000)
})

describe('a member who left and is invited back', () => {
  it('joins again in the same session by the fresh invite: the leave’s refusal ends, the conversation stays listed, and writes go', async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv } = await pair(world)
    await aliceConv.send('before')
    await until(() => texts(bobConv).includes('before'), 10_000, 'bob has it')
    await bobConv.leave()
    await until(() => !aliceConv.members().some((m) => m.userId === bob.userId), 10_000, 'alice sees bob gone')
    expect(bobConv.refusal?.message).toBe('you left this conversation')
    await aliceConv.send('while bob was out')
    // Before, this was refused with "you left this conversation", and the conversation left the list.
    const again = await bob.join(await aliceConv.invite())
    expect(again.refusal).toBeUndefined()
    expect((await bob.conversations()).map((c) => c.id)).toEqual([aliceConv.id])
    await again.send('bob is back')
    await until(() => texts(aliceConv).includes('bob is back'), 10_000, 'alice hears bob')
    await until(() => texts(again).includes('while bob was out'), 10_000, 'bob reads what he missed')
    expect(world.errors.get(bob)).toEqual([])
  })
})

describe('a member removed and invited back', () => {
  it('keeps the refused conversation and its keys when the new invite does not work, and merges them when one does', async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv } = await pair(world)
    await aliceConv.send('before removal')
    await until(() => texts(bobConv).includes('before removal'), 10_000, 'bob has it')
    await aliceConv.removeMember(bob.userId)
    await until(() => bobConv.refusal !== undefined, 10_000, 'bob refused')
    const expired = await aliceConv.invite({ expiresIn: 1 })
    await new Promise((r) => setTimeout(r, 20))
    await expect(bob.join(expired)).rejects.toMatchObject({ code: 'invite_invalid' })
    expect((await bob.conversations()).map((c) => c.id)).toEqual([aliceConv.id])
    expect(bobConv.refusal?.code).toBe('refused')
    // 'from-join' carries only the key of its time: what Bob held before comes along.
    const again = await bob.join(await aliceConv.invite({ history: 'from-join' }))
    expect(again.keys().has(0)).toBe(true)
    expect(texts(again)).toContain('before removal')
  })

  it("an admin's second device adding someone while offline, after the first changed the key, adds them when back", async () => {
    world = new World()
    await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    const carol = await world.client('carol')
    const laptop = await world.client('alice-laptop', { link: await alice.linkDevice() })
    const laptopConv = await until(async () => (await laptop.conversations()).find((c) => c.id === aliceConv.id), 10_000, 'the laptop has it')
    await aliceConv.send('hello')
    await until(() => texts(bobConv).includes('hello') && texts(laptopConv).includes('hello'), 10_000, 'both have hello')
    laptop.disconnect()
    await until(() => laptop.connection === 'offline')
    // Bob leaves; Alice's phone changes the key. The laptop, offline, knows of neither and adds
    // Carol under the old key: the relay refuses that add. Before, addMember had resolved and
    // Carol was never added; the laptop only heard "relay refused: forbidden".
    await bobConv.leave()
    await until(() => aliceConv.epoch === 1, 10_000, 'the phone changed the key')
    await laptopConv.addMember(await carol.publicIdentity())
    laptop.connect()
    const carolConv = await until(async () => (await carol.conversations()).find((c) => c.id === aliceConv.id), 15_000, 'carol has the conversation')
    await until(() => texts(carolConv).includes('hello'), 10_000, 'carol reads the history')
    await until(() => aliceConv.members().some((m) => m.userId === carol.userId), 10_000, 'the phone lists carol')
    expect(laptopConv.members().map((m) => m.userId).sort()).toEqual([alice.userId, carol.userId].sort())
    expect(world.errors.get(laptop)).toEqual([])
  })

  it('joins again by a fresh invite made on a device linked after the leave, which this device has not heard of yet', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    await aliceConv.send('hello')
    await until(() => texts(bobConv).includes('hello'), 10_000, 'bob has hello')
    await bobConv.leave()
    await until(() => !aliceConv.members().some((m) => m.userId === bob.userId), 10_000, 'alice sees bob gone')
    const laptop = await world.client('alice-laptop', { link: await alice.linkDevice() })
    const laptopConv = await until(async () => (await laptop.conversations()).find((c) => c.id === aliceConv.id), 10_000, 'the laptop has it')
    await until(() => laptopConv.messages().length === 1, 10_000, 'the laptop has the history')
    // Before, Bob's device folded the invite before the catch-up told it of the laptop: the
    // invite looked forged, the leave stood, and the join was rejected ("you left") although
    // the relay had let him back in.
    const again = await bob.join(await laptopConv.invite())
    expect(again.refusal).toBeUndefined()
    await until(() => aliceConv.members().some((m) => m.userId === bob.userId), 10_000, 'alice sees bob back')
    await aliceConv.send('after rejoin')
    await until(() => texts(again).includes('after rejoin'), 10_000, 'bob reads on')
    expect((await bob.conversations()).map((c) => c.id)).toEqual([aliceConv.id])
    expect(world.errors.get(bob)).toEqual([])
  })

  it('joins again in the same session by the fresh invite: a new conversation object that writes, also after a restart', async () => {
    world = new World()
    await world.relay()
    const { bob, aliceConv, bobConv } = await pair(world)
    await aliceConv.send('before')
    await until(() => texts(bobConv).includes('before'), 10_000, 'bob has it')
    await aliceConv.removeMember(bob.userId)
    await until(() => bobConv.refusal?.code === 'refused', 10_000, 'bob refused')
    await aliceConv.send('while bob was out')
    const again = await bob.join(await aliceConv.invite())
    expect(again).not.toBe(bobConv)
    expect(again.refusal).toBeUndefined()
    await again.send('bob is back')
    await until(() => texts(aliceConv).includes('bob is back'), 10_000, 'alice hears bob')
    await until(() => texts(again).includes('while bob was out'), 10_000, 'bob reads what he missed (a full invite)')
    expect((await bob.conversations()).filter((c) => c.id === aliceConv.id)).toEqual([again])
    await bob.close()
    const restarted = await world.client('bob', { storage: join(world.dir, 'bob.db') })
    const conv = await until(async () => (await restarted.conversations()).find((c) => c.id === aliceConv.id))
    await conv.send('bob after a restart')
    await until(() => texts(aliceConv).includes('bob after a restart'), 10_000, 'alice hears bob again')
  }, 40_000)
})
