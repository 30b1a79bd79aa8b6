import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { decodeLinkPayload, encodeOffer, LinkMailbox, LinkSlot, openLinkMessage, readAnswer, sealLinkMessage } from '../../src/client/device-link.js'
import { createClient } from '../../src/client/index.js'
import { generateAgreementKeyPair, generateSigningKeyPair, SignatureDomain, signWithDomain } from '../../src/shared/crypto/index.js'
import { keyCheckOf } from '../../src/shared/envelope.js'
import { certificatePayload, encodeAddBody, encodeCertificate, readCertificate, RecordKind } from '../../src/shared/records.js'
import { openSqliteStore } from '../../src/client/storage/sqlite-store.js'
import { type Client, onDisk, pair, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

/** A client's identity and record signing, with which these specs write records a client would not. */
const internalsOf = (c: Client) =>
  c as unknown as {
    identity: { userPub: Uint8Array; userSecret: Uint8Array }
    signRecord: (k: number, b: Uint8Array) => Promise<Uint8Array>
  }

/** Link a new device to `primary` and return its client (a real relay mailbox in between). */
async function linkNew(world: World, primary: Client, file: string, name?: string): Promise<Client> {
  const payload = await primary.linkDevice()
  const device = await createClient({ relay: world.url, ...(name ? { name } : {}), storage: join(world.dir, `${file}.db`), link: payload })
  world.clients.push(device)
  world.errors.set(device, [])
  device.on('error', (err) => world.errors.get(device)!.push(err))
  return device
}

describe('linked devices', () => {
  it('a linked device shows every conversation with its history, sends as the same author, and receipts count the person once', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    const second = await alice.createConversation({ title: 'Second' })
    for (let i = 0; i < 20; i++) await aliceConv.send(`history ${i}`)
    await bobConv.send('from bob')
    await second.send('only alice here')
    await until(() => texts(aliceConv).includes('from bob'))

    const laptop = await linkNew(world, alice, 'alice-laptop')
    expect(laptop.userId).toBe(alice.userId)
    expect(laptop.deviceId).not.toBe(alice.deviceId)
    const laptopConvs = await until(async () => {
      const convs = await laptop.conversations()
      return convs.length === 2 && convs.every((c) => c.messages().length > 0) ? convs : undefined
    }, 15_000, 'laptop has both conversations')
    const laptopConv = laptopConvs.find((c) => c.id === aliceConv.id)!
    await until(() => texts(laptopConv).length === 21, 10_000, 'laptop has the history')
    expect(texts(laptopConv)).toEqual(texts(aliceConv))
    expect(laptopConvs.find((c) => c.id === second.id)!.title).toBe('Second')

    // Same person: the message shows Alice as author on every device, and as "mine" on both of hers.
    const sent = await laptopConv.send('from the laptop')
    await until(() => texts(bobConv).includes('from the laptop'))
    const atBob = bobConv.messages().find((m) => m.text === 'from the laptop')!
    expect(atBob.author).toBe(alice.userId)
    // The link carried the person's name: the laptop was started without one.
    expect(atBob.authorName).toBe('alice')
    await until(() => texts(aliceConv).includes('from the laptop'))
    expect(aliceConv.messages().find((m) => m.text === 'from the laptop')!.mine).toBe(true)

    // Receipts count people: Bob alone decides delivered/read, though Alice has two devices.
    await until(() => laptopConv.message(sent.id)?.status === 'delivered' || laptopConv.message(sent.id)?.status === 'read', 10_000, 'delivered')
    await bobConv.markRead()
    await until(() => laptopConv.message(sent.id)?.status === 'read', 10_000, 'read')
    // The phone shows the laptop's message with the same ticks.
    await until(() => aliceConv.message(sent.id)?.status === 'read', 10_000, 'read on the other device too')
    const receipts = laptopConv.receipts(sent.id)
    expect(receipts.map((r) => r.member)).toEqual([bob.userId])

    // Both devices are listed, on both.
    expect(alice.devices().map((d) => d.id).sort()).toEqual([alice.deviceId, laptop.deviceId].sort())
    await until(() => laptop.devices().length === 2, 5000, 'laptop knows the phone')
    expect(laptop.devices().find((d) => d.current)!.id).toBe(laptop.deviceId)
    expect(laptop.devices().find((d) => d.primary)!.id).toBe(alice.deviceId)
    expect(alice.devices().find((d) => d.primary)!.id).toBe(alice.deviceId)
    await expect(laptop.removeDevice(alice.deviceId)).rejects.toMatchObject({ code: 'refused' })
    expect(aliceConv.members().find((m) => m.userId === alice.userId)!.devices.sort()).toEqual([alice.deviceId, laptop.deviceId].sort())
  }, 40_000)

  it('a conversation joined later on one device reaches the other by itself', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    const bob = await world.client('bob')
    const laptop = await linkNew(world, alice, 'alice-laptop')
    await until(() => laptop.connection === 'online')
    const bobConv = await bob.createConversation({ title: 'Bob asks' })
    await bobConv.send('hi alice')
    // The laptop joins; the phone is brought in by the laptop, without an invite.
    const laptopConv = await laptop.join(await bobConv.invite())
    const phoneConv = await until(async () => (await alice.conversations()).find((c) => c.id === bobConv.id), 15_000, 'phone gets the conversation')
    await until(() => texts(phoneConv).includes('hi alice'), 10_000, 'phone has history')
    await phoneConv.send('answer from the phone')
    await until(() => texts(laptopConv).includes('answer from the phone') && texts(bobConv).includes('answer from the phone'))
  }, 40_000)

  it('removeDevice takes the device out of every conversation, rotates the key, and it reads nothing after', async () => {
    world = new World()
    await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    const laptop = await linkNew(world, alice, 'alice-laptop')
    const laptopConv = await until(async () => (await laptop.conversations())[0], 15_000, 'laptop conversation')
    await aliceConv.send('before unlink')
    await until(() => texts(laptopConv).includes('before unlink'))
    const epochBefore = aliceConv.epoch
    await alice.removeDevice(laptop.deviceId)
    await until(() => aliceConv.epoch > epochBefore, 10_000, 'new epoch')
    await until(() => world.errors.get(laptop)!.some((e) => /removed|not a member/.test(e.message)), 10_000, 'laptop refused')
    await bobConv.send('after unlink')
    await until(() => texts(aliceConv).includes('after unlink'))
    await new Promise((r) => setTimeout(r, 300))
    expect(texts(laptopConv)).not.toContain('after unlink')
    expect(alice.devices().map((d) => d.id)).toEqual([alice.deviceId])
    expect(aliceConv.members().find((m) => m.userId === alice.userId)!.devices).toEqual([alice.deviceId])
    await expect(alice.removeDevice(alice.deviceId)).rejects.toMatchObject({ code: 'invalid_argument' })
  }, 40_000)

  it('a member who is not an admin unlinks a device: the key changes at once, with every admin offline', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    const bobLaptop = await linkNew(world, bob, 'bob-laptop')
    const laptopConv = await until(async () => (await bobLaptop.conversations())[0], 15_000, 'laptop conversation')
    await until(() => aliceConv.members().find((m) => m.userId === bob.userId)!.devices.length === 2, 10_000, 'laptop added')
    await alice.close()
    const epoch = bobConv.epoch
    await bob.removeDevice(bobLaptop.deviceId)
    expect(bobConv.epoch).toBeGreaterThan(epoch)
    await bobConv.send('after the laptop is gone')
    await until(() => world.errors.get(bobLaptop)!.some((e) => /removed|not a member/.test(e.message)), 10_000, 'laptop refused')
    await new Promise((r) => setTimeout(r, 300))
    expect(texts(laptopConv)).not.toContain('after the laptop is gone')
  }, 40_000)

  it('a link works once, only with its secret, and only from the device holding the identity key', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    const laptop = await linkNew(world, alice, 'alice-laptop')
    await expect(laptop.linkDevice()).rejects.toMatchObject({ code: 'refused' })
    // A lifetime that is not a whole number of ms above 0 (Infinity never finished encoding).
    for (const expiresIn of [Number.POSITIVE_INFINITY, Number.NaN, 0, -1, 1.5]) {
      await expect(alice.linkDevice({ expiresIn }), String(expiresIn)).rejects.toMatchObject({ code: 'invalid_argument' })
    }
    await expect(createClient({ relay: world.url, storage: join(world.dir, 'bad.db'), link: 'petrel-link:nonsense' })).rejects.toMatchObject({
      code: 'invalid_argument',
    })
    // Junk in the mailbox (anyone who saw the mailbox id, not the secret) does not spoil the link.
    const { decodeLinkPayload } = await import('../../src/client/device-link.js')
    const payload = await alice.linkDevice()
    const junk = await fetch(`${world.url.replace('ws://', 'http://')}/v1/link/${decodeLinkPayload(payload).mailbox}/0`, { method: 'PUT', body: new Uint8Array([1, 2, 3]) })
    expect(junk.status).toBe(201)
    const phone = await createClient({ relay: world.url, storage: join(world.dir, 'phone.db'), link: payload })
    world.clients.push(phone)
    expect(phone.userId).toBe(alice.userId)
    // The same payload again (the QR code scanned twice): told it is spent within seconds,
    // not after waiting for an answer until the link expires (10 minutes).
    const started = Date.now()
    await expect(createClient({ relay: world.url, storage: join(world.dir, 'again.db'), link: payload })).rejects.toMatchObject({
      code: 'link_failed',
      message: expect.stringMatching(/already used/),
    })
    expect(Date.now() - started).toBeLessThan(15_000)
    // An expired payload is refused before anything is sent.
    const expired = await alice.linkDevice({ expiresIn: 1 })
    await new Promise((r) => setTimeout(r, 20))
    await expect(createClient({ relay: world.url, storage: join(world.dir, 'late.db'), link: expired })).rejects.toMatchObject({ code: 'link_failed' })
  }, 45_000)
})

describe('a link answered around its expiry', () => {
  const realFetch = globalThis.fetch
  afterEach(() => {
    globalThis.fetch = realFetch
  })

  it('links the device when the answer, begun in time, lands just after: no device the first one added is left unused', async () => {
    world = new World()
    await world.relay()
    const { alice, aliceConv } = await pair(world)
    // A slow uplink on the first device: its answer reaches the relay 1.5 s after it was sent.
    globalThis.fetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
      if (init?.method === 'PUT' && String(input).endsWith('/1')) await new Promise((r) => setTimeout(r, 1500))
      return realFetch(input, init)
    }) as typeof fetch
    const linked: string[] = []
    alice.on('deviceLinked', (id) => linked.push(id))
    const payload = await alice.linkDevice({ expiresIn: 1000 })
    const laptop = await createClient({ relay: world.url, storage: join(world.dir, 'laptop.db'), link: payload })
    world.clients.push(laptop)
    await until(() => linked.length === 1, 5000, 'the first device says it linked')
    expect(linked).toEqual([laptop.deviceId])
    expect(alice.devices().map((d) => d.id).sort()).toEqual([alice.deviceId, laptop.deviceId].sort())
    await until(() => aliceConv.members().find((m) => m.userId === alice.userId)!.devices.length === 2, 5000, 'added to the conversation')
  }, 30_000)
})

describe('a new device whose start failed mid-link', () => {
  it('stops a link at once when the app cancels it, keeping what it needs to take the same link up again', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    // Alice's phone is closed before it answers: the laptop would wait to the link's expiry and 30 s more.
    const payload = await alice.linkDevice({ expiresIn: 60_000 })
    await alice.close()
    const path = join(world.dir, 'laptop.db')
    const stop = new AbortController()
    const linking = createClient({ relay: world.url, storage: path, link: payload, signal: stop.signal })
    linking.catch(() => undefined)
    await new Promise((r) => setTimeout(r, 500))
    const started = Date.now()
    stop.abort()
    await expect(linking).rejects.toMatchObject({ code: 'link_failed', message: 'the device link was cancelled' })
    expect(Date.now() - started).toBeLessThan(2_000)
    // Its keys stay (an offer made with them may be at the relay), and no identity was stored.
    const disk = await openSqliteStore(path)
    try {
      expect(await disk.get('link-pending')).toBeInstanceOf(Uint8Array)
      expect(await disk.get('identity')).toBeUndefined()
    } finally {
      await disk.close()
    }
    // Cancelled before it starts: at once.
    await expect(createClient({ relay: world.url, storage: path, link: payload, signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'link_failed' })
  }, 30_000)

  it('links by the same link when started again, even past its expiry: the device the first one certified, no other', async () => {
    world = new World()
    await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    const linked: string[] = []
    alice.on('deviceLinked', (id) => linked.push(id))
    const payload = await alice.linkDevice({ expiresIn: 3000 })
    // The laptop's disk fails as it stores its identity (as if it died there), after the first
    // device certified it and answered.
    const path = join(world.dir, 'laptop.db')
    const disk = await openSqliteStore(path)
    const failing = onDisk(disk, async (batch, options) => {
      if (batch.put?.some(([key]) => key === 'identity')) throw new Error('disk failed as the identity was stored')
      return disk.commit(batch, options)
    })
    await expect(createClient({ relay: world.url, storage: failing, link: payload })).rejects.toThrow(/identity was stored/)
    await disk.close()
    await until(() => linked.length === 1, 10_000, 'the first device says it linked')
    // Started again after the link expired: the answer still waits at the relay for these keys.
    await until(() => Date.now() > decodeLinkPayload(payload).expiresAt + 100, 10_000)
    const laptop = await createClient({ relay: world.url, storage: path, link: payload })
    world.clients.push(laptop)
    expect(laptop.deviceId).toBe(linked[0])
    expect(laptop.displayName).toBe('alice')
    expect(alice.devices().map((d) => d.id).sort()).toEqual([alice.deviceId, laptop.deviceId].sort())
    await bobConv.send('for every device of alice')
    await until(async () => {
      const conv = (await laptop.conversations()).find((c) => c.id === aliceConv.id)
      return conv && texts(conv).includes('for every device of alice')
    }, 15_000, 'the laptop reads the conversation')
    // Its third start finds the identity stored: no link is asked for.
    await laptop.close()
    const again = await createClient({ relay: world.url, storage: path, link: payload })
    world.clients.push(again)
    expect(again.deviceId).toBe(linked[0])
  }, 40_000)

  it('links by the same link when the relay stored its offer but the answer to that was lost', async () => {
    world = new World()
    await world.relay()
    const { alice } = await pair(world)
    const linked: string[] = []
    alice.on('deviceLinked', (id) => linked.push(id))
    const payload = await alice.linkDevice()
    const realFetch = globalThis.fetch
    // The offer reaches the relay; the response to it never comes back (a dropped connection).
    globalThis.fetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const res = await realFetch(input, init)
      if (init?.method === 'PUT' && String(input).endsWith('/0')) throw new TypeError('fetch failed: connection reset')
      return res
    }) as typeof fetch
    const path = join(world.dir, 'laptop.db')
    try {
      await expect(createClient({ relay: world.url, storage: path, link: payload })).rejects.toMatchObject({ code: 'link_failed' })
    } finally {
      globalThis.fetch = realFetch
    }
    await until(() => linked.length === 1, 10_000, 'the first device certified the offer it took')
    const laptop = await createClient({ relay: world.url, storage: path, link: payload })
    world.clients.push(laptop)
    expect(laptop.deviceId).toBe(linked[0])
  }, 40_000)
})

describe('a link used twice', () => {
  it("fails the second device with a clear error and leaves the first device's answer for it", async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    await until(() => alice.connection === 'online')
    await alice.createConversation({ title: 'x' })
    let linked: string | undefined
    alice.on('deviceLinked', (id) => {
      linked = id
    })
    const payload = await alice.linkDevice()
    // Device X, the first to use it, by hand: its wait for the answer starts late.
    const link = decodeLinkPayload(payload)
    const x = { device: generateSigningKeyPair(), agreement: generateAgreementKeyPair() }
    const mailbox = new LinkMailbox([world.url])
    await mailbox.put(link.mailbox, LinkSlot.Offer, sealLinkMessage(link, LinkSlot.Offer, encodeOffer(x.device.publicKey, x.agreement.publicKey)))
    await until(() => linked, 10_000, 'alice certified X')
    // Device Y scans the same code before X looks: the link is spent (the first device left its
    // offer slot taken once it answered X), and Y never touches X's answer.
    await expect(createClient({ relay: world.url, storage: join(world.dir, 'y.db'), link: payload })).rejects.toMatchObject({
      code: 'link_failed',
      message: expect.stringMatching(/already used/),
    })
    // Y started again: told the same soon, not made to wait for an answer that is X's.
    const again = Date.now()
    await expect(createClient({ relay: world.url, storage: join(world.dir, 'y.db'), link: payload })).rejects.toMatchObject({
      code: 'link_failed',
      message: expect.stringMatching(/already used/),
    })
    expect(Date.now() - again).toBeLessThan(15_000)
    const answer = await mailbox.take(link.mailbox, LinkSlot.Answer, Date.now() + 1500)
    expect(answer).toBeDefined()
    expect(readAnswer(openLinkMessage(link, LinkSlot.Answer, answer!)!).certificate.devicePub).toEqual(x.device.publicKey)
  }, 45_000)
})

describe('who may add which device', () => {
  it("a member cannot claim another person's device under their own identity (and then unlink it)", async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    const internals = internalsOf(bob)
    const aliceCert = aliceConv.membershipState.members.get(alice.userId)!.devices.get(alice.deviceId)!
    // Bob certifies Alice's device key as his own and adds it to the conversation.
    const payload = certificatePayload(internals.identity.userPub, aliceCert.devicePub, aliceCert.agreementPub, Date.now())
    const forgedCert = encodeCertificate(payload, await signWithDomain(SignatureDomain.DeviceCertificate, internals.identity.userSecret, payload))
    const body = encodeAddBody({
      room: aliceConv.id,
      userPub: internals.identity.userPub,
      epoch: bobConv.epoch,
      keyCheck: keyCheckOf(bobConv.keys().get(bobConv.epoch)!),
      at: Date.now(),
      devices: [{ certificate: forgedCert, keyBundle: new Uint8Array([1]) }],
    })
    await (bobConv as unknown as { writeRecords: (r: Uint8Array[]) => Promise<void> }).writeRecords([await internals.signRecord(RecordKind.Add, body)])
    await until(() => relay.metrics.rejectedCount('record refused') >= 1, 5000, 'relay refuses')
    expect(bobConv.membershipState.devices.get(alice.deviceId)).toBe(alice.userId)
    await aliceConv.send('still mine')
    await until(() => texts(bobConv).includes('still mine'))
    expect(bobConv.messages().find((m) => m.text === 'still mine')!.author).toBe(alice.userId)
    expect(bob.userId).not.toBe(alice.userId)
  })
})

describe('device caps', () => {
  it('a person gets at most 16 devices into a conversation: the relay refuses more, addDevices and linkDevice say so up front, and the key still rotates', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    const internals = internalsOf(bob)
    const certFor = async () => {
      const payload = certificatePayload(internals.identity.userPub, generateSigningKeyPair().publicKey, generateAgreementKeyPair().publicKey, Date.now())
      return encodeCertificate(payload, await signWithDomain(SignatureDomain.DeviceCertificate, internals.identity.userSecret, payload))
    }
    // Bob's own add records, as a client that skips the check would write them.
    const rawAdd = async (certs: Uint8Array[]) => {
      const body = encodeAddBody({
        room: bobConv.id,
        userPub: internals.identity.userPub,
        epoch: bobConv.epoch,
        keyCheck: keyCheckOf(bobConv.keys().get(bobConv.epoch)!),
        at: Date.now(),
        devices: certs.map((certificate) => ({ certificate, keyBundle: new Uint8Array([1]) })),
      })
      await (bobConv as unknown as { writeRecords: (r: Uint8Array[]) => Promise<void> }).writeRecords([await internals.signRecord(RecordKind.Add, body)])
    }
    const devicesOfBob = () => aliceConv.membershipState.members.get(bob.userId)?.devices.size
    await rawAdd(await Promise.all(Array.from({ length: 15 }, certFor)))
    await until(() => devicesOfBob() === 16, 5000, 'fifteen more of bob at alice')
    const before = relay.metrics.rejectedCount('record refused')
    await rawAdd([await certFor()])
    await until(() => relay.metrics.rejectedCount('record refused') > before, 5000, 'relay refuses the seventeenth')
    await aliceConv.send('after the refused add')
    await until(() => texts(bobConv).includes('after the refused add'))
    expect(devicesOfBob()).toBe(16)
    // The client's own paths refuse it before writing anything.
    const extra = readCertificate(await certFor())
    await expect(bobConv.addDevices(internals.identity.userPub, [extra])).rejects.toMatchObject({ code: 'invalid_argument', message: expect.stringContaining('too many devices') })
    // (He may list the refused one too: his device folded his own add before the relay's answer.)
    await until(() => bob.devices().length >= 16, 5000, 'bob learns his devices')
    await expect(bob.linkDevice()).rejects.toMatchObject({ code: 'refused', message: expect.stringContaining('at most 16') })
    // An epoch for 17 devices still fits: removing him rotates the key.
    const epoch = aliceConv.epoch
    await aliceConv.removeMember(bob.userId)
    await until(() => aliceConv.epoch > epoch, 10_000, 'key rotated')
    await aliceConv.send('bob is gone')
    await until(() => aliceConv.message(aliceConv.messages().at(-1)!.id)?.status === 'sent', 5000, 'sent after the rotation')
    expect(alice.deviceId).toBeDefined()
  }, 30_000)
})

describe('adding people directly', () => {
  it("addMember brings every device of a person in without an invite, with history; 'from-join' hides what came before", async () => {
    world = new World()
    await world.relay()
    const { aliceConv } = await pair(world)
    await aliceConv.send('old news')
    const carol = await world.client('carol')
    const carolLaptop = await linkNew(world, carol, 'carol-laptop')
    await until(() => carol.connection === 'online' && carolLaptop.connection === 'online')
    await aliceConv.addMember(await carol.publicIdentity())
    for (const device of [carol, carolLaptop]) {
      const conv = await until(async () => (await device.conversations()).find((c) => c.id === aliceConv.id), 15_000, 'carol device gets it')
      await until(() => texts(conv).includes('old news'), 10_000, 'with history')
    }
    expect(aliceConv.members().find((m) => m.userId === carol.userId)!.devices.length).toBe(2)

    const dave = await world.client('dave')
    await aliceConv.addMember(await dave.publicIdentity(), { history: 'from-join' })
    const daveConv = await until(async () => (await dave.conversations())[0], 15_000, 'dave gets it')
    await aliceConv.send('welcome dave')
    await until(() => texts(daveConv).includes('welcome dave'), 10_000, 'dave reads new messages')
    expect(texts(daveConv)).not.toContain('old news')

    // Only admins add; a malformed identity is a clear error.
    const carolConv = (await carol.conversations())[0]!
    await expect(carolConv.addMember(await dave.publicIdentity())).rejects.toMatchObject({ code: 'refused' })
    await expect(aliceConv.addMember('petrel-id:AAAA')).rejects.toMatchObject({ code: 'invalid_argument' })
  }, 60_000)
})
