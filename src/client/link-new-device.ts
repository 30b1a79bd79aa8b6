/**
 * The new device's side of linking (see device-link.ts): send our public keys, wait for the
 * certificate, check it certifies exactly those keys, and store the identity.
 *
 * The keys are stored before the offer leaves, and the answer is read, not taken, until the
 * identity is stored: a device that died (or whose storage failed) after the first device
 * certified it used to lose both its keys and the answer. It was left with a link "already
 * used", and the first device with a certified device nobody held, in every conversation,
 * holding compaction back for good. Started again with the same link, it now picks up where it
 * was, even past the link's expiry while the relay keeps the answer (10 minutes by default).
 *
 * ```
 * link-pending := uint8 1 • varString mailbox • varUint8Array deviceSecret(32) • varUint8Array agreementSecret(32)
 *                 • uint8 offered (1 once our offer may be at the relay: set before it is put)
 * ```
 * under the device store's key `link-pending`, deleted in the commit that stores the identity,
 * and when the link fails for good (used by another device, never answered). Set before the
 * offer is put, not after: the relay may store it while its answer to us is lost (or a second
 * relay is asked), and a later "already used" is then ours. The answer tells ours apart.
 */
import * as encoding from 'lib0/encoding'
import { agreementPublicKeyFromSecret, constantTimeEqual, generateAgreementKeyPair, generateSigningKeyPair, publicKeyFromSecret } from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { type DeviceCertificate, verifyCertificate } from '../shared/records.js'
import { StrictReader } from '../shared/wire.js'
import { decodeLinkPayload, encodeOffer, LinkMailbox, LinkSlot, openLinkMessage, readAnswer, sealLinkMessage } from './device-link.js'
import { type Identity, NAME_KEY, storeLinkedIdentity } from './identity.js'
import type { DeviceStore } from './storage/device-store.js'

/** How long past the link's expiry the new device still waits for an answer begun in time. */
const ANSWER_GRACE_MS = 30_000

/** How long a new device waits for an occupied offer slot to clear. */
const OCCUPIED_RETRY_MS = 10_000

const PENDING_KEY = 'link-pending'
const PENDING_VERSION = 1

interface PendingLink {
  mailbox: string
  deviceSecret: Uint8Array
  agreementSecret: Uint8Array
  offered: boolean
}

function encodePending(p: PendingLink): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, PENDING_VERSION)
  encoding.writeVarString(e, p.mailbox)
  encoding.writeVarUint8Array(e, p.deviceSecret)
  encoding.writeVarUint8Array(e, p.agreementSecret)
  encoding.writeUint8(e, p.offered ? 1 : 0)
  return encoding.toUint8Array(e)
}

/** The stored pending link; one this build cannot read counts as none (a fresh link starts over). */
async function readPending(store: DeviceStore): Promise<PendingLink | undefined> {
  const bytes = await store.get(PENDING_KEY)
  if (!bytes) return undefined
  try {
    const r = new StrictReader(bytes)
    if (r.uint8() !== PENDING_VERSION) return undefined
    const p = { mailbox: r.varString(128), deviceSecret: r.varBytes(32), agreementSecret: r.varBytes(32), offered: false }
    const offered = r.uint8()
    r.end()
    if (offered > 1 || p.deviceSecret.length !== 32 || p.agreementSecret.length !== 32) return undefined
    p.offered = offered === 1
    return p
  } catch {
    return undefined
  }
}

export async function linkAsNewDevice(
  store: DeviceStore,
  relays: string[],
  payload: string,
  signal?: AbortSignal,
): Promise<{ identity: Identity; siblings: DeviceCertificate[]; name: string; primary: string }> {
  // Cancelled: what is stored stays, so the same link started again resumes.
  const cancelled = () => new PetrelError(ErrorCode.LinkFailed, 'the device link was cancelled')
  if (signal?.aborted) throw cancelled()
  // A link that failed for good leaves no keys behind to resume with: started again with it,
  // the device says so at once instead of waiting for an answer that is not its own.
  const giveUp = async (message: string): Promise<never> => {
    await store.commit({ put: [[PENDING_KEY, null]] }).catch(() => undefined)
    throw new PetrelError(ErrorCode.LinkFailed, message)
  }
  const link = decodeLinkPayload(payload)
  const stored = await readPending(store)
  const resumed = stored?.mailbox === link.mailbox ? stored : undefined
  if (!resumed && Date.now() > link.expiresAt) throw new PetrelError(ErrorCode.LinkFailed, 'this device link has expired; make a new one')
  let pending: PendingLink
  if (resumed) pending = resumed
  else {
    pending = { mailbox: link.mailbox, deviceSecret: generateSigningKeyPair().secretKey, agreementSecret: generateAgreementKeyPair().secretKey, offered: true }
    await store.commit({ put: [[PENDING_KEY, encodePending(pending)]] })
  }
  const devicePub = publicKeyFromSecret(pending.deviceSecret)
  const agreementPub = agreementPublicKeyFromSecret(pending.agreementSecret)
  const mailbox = new LinkMailbox(relays)
  const offer = sealLinkMessage(link, LinkSlot.Offer, encodeOffer(devicePub, agreementPub))
  // The slot may hold junk the other device has not cleared yet: try again for a while. A link
  // really used by another device stays taken, and that is the error then. Resumed after the
  // relay stored our offer, the offer that used it may be ours: the answer tells.
  for (const until = Date.now() + OCCUPIED_RETRY_MS; ; ) {
    try {
      await mailbox.put(link.mailbox, LinkSlot.Offer, offer)
      break
    } catch (err) {
      const used = err instanceof PetrelError && err.code === ErrorCode.LinkFailed && /already used/.test(err.message)
      // Started again: a 409 may be our own offer, stored by a start that failed after it.
      if (used && resumed?.offered) break
      if (signal?.aborted) throw cancelled()
      if (!used) throw err
      if (Date.now() > until) await giveUp(err.message)
      await new Promise((r) => setTimeout(r, 250))
      if (signal?.aborted) throw cancelled()
    }
  }
  // An answer the other device began before the link expired may land a little after. Read,
  // not taken: it stays until the identity is stored.
  const answer = await mailbox.take(link.mailbox, LinkSlot.Answer, Math.max(link.expiresAt, resumed ? Date.now() : 0) + ANSWER_GRACE_MS, signal, true).catch((err: unknown) => {
    throw signal?.aborted ? cancelled() : err
  })
  if (signal?.aborted) throw cancelled()
  if (!answer) return giveUp('the other device did not answer before the link expired')
  const plain = openLinkMessage(link, LinkSlot.Answer, answer)
  if (!plain) throw new PetrelError(ErrorCode.LinkFailed, 'the link answer was not sealed with the link secret')
  let parsed: ReturnType<typeof readAnswer>
  try {
    parsed = readAnswer(plain)
  } catch (cause) {
    throw new PetrelError(ErrorCode.LinkFailed, 'the link answer is malformed', { cause })
  }
  const { certificate, siblings, name, primary } = parsed
  // Another device's answer (the link was used twice, say a QR code scanned by two) stays in
  // its slot for that device, which is waiting for it.
  const ours = constantTimeEqual(certificate.devicePub, devicePub) && constantTimeEqual(certificate.agreementPub, agreementPub)
  if (!ours) return giveUp('this link was used by another device: make a new one for this device')
  if (!(await verifyCertificate(certificate))) throw new PetrelError(ErrorCode.LinkFailed, 'the link answer does not certify this device')
  const verified: DeviceCertificate[] = []
  for (const s of siblings) if (constantTimeEqual(s.userPub, certificate.userPub) && (await verifyCertificate(s))) verified.push(s)
  const identity = await storeLinkedIdentity(store, pending.deviceSecret, pending.agreementSecret, certificate.bytes, [
    [PENDING_KEY, null],
    ...(name ? ([[NAME_KEY, new TextEncoder().encode(name)]] as Array<[string, Uint8Array]>) : []),
  ])
  // Done with it: free the slot now rather than at its expiry (best effort).
  await mailbox.take(link.mailbox, LinkSlot.Answer, Date.now() + 1).catch(() => undefined)
  return { identity, siblings: verified, name, primary }
}
