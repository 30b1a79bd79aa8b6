/**
 * The new device's side of linking (see device-link.ts): send our public keys, wait for the
 * certificate, check it certifies exactly those keys, and store the identity.
 */
import { constantTimeEqual, generateAgreementKeyPair, generateSigningKeyPair } from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { type DeviceCertificate, verifyCertificate } from '../shared/records.js'
import { decodeLinkPayload, encodeOffer, LinkMailbox, LinkSlot, openLinkMessage, readAnswer, sealLinkMessage } from './device-link.js'
import { type Identity, storeLinkedIdentity } from './identity.js'
import type { DeviceStore } from './storage/device-store.js'

/** How long past the link's expiry the new device still waits for an answer begun in time. */
const ANSWER_GRACE_MS = 30_000

/** How long a new device waits for an occupied offer slot to clear. */
const OCCUPIED_RETRY_MS = 10_000

export async function linkAsNewDevice(
  store: DeviceStore,
  relays: string[],
  payload: string,
): Promise<{ identity: Identity; siblings: DeviceCertificate[]; name: string; primary: string }> {
  const link = decodeLinkPayload(payload)
  if (Date.now() > link.expiresAt) throw new PetrelError(ErrorCode.LinkFailed, 'this device link has expired; make a new one')
  const device = generateSigningKeyPair()
  const agreement = generateAgreementKeyPair()
  const mailbox = new LinkMailbox(relays)
  const offer = sealLinkMessage(link, LinkSlot.Offer, encodeOffer(device.publicKey, agreement.publicKey))
  // The slot may hold junk the other device has not cleared yet: try again for a while. A link
  // really used by another device stays taken, and that is the error then.
  for (const giveUp = Date.now() + OCCUPIED_RETRY_MS; ; ) {
    try {
      await mailbox.put(link.mailbox, LinkSlot.Offer, offer)
      break
    } catch (err) {
      if (!(err instanceof PetrelError && err.code === ErrorCode.LinkFailed && /already used/.test(err.message)) || Date.now() > giveUp) throw err
      await new Promise((r) => setTimeout(r, 250))
    }
  }
  // An answer the other device began before the link expired may land a little after.
  const answer = await mailbox.take(link.mailbox, LinkSlot.Answer, link.expiresAt + ANSWER_GRACE_MS)
  if (!answer) throw new PetrelError(ErrorCode.LinkFailed, 'the other device did not answer before the link expired')
  const plain = openLinkMessage(link, LinkSlot.Answer, answer)
  if (!plain) throw new PetrelError(ErrorCode.LinkFailed, 'the link answer was not sealed with the link secret')
  let parsed: ReturnType<typeof readAnswer>
  try {
    parsed = readAnswer(plain)
  } catch (cause) {
    throw new PetrelError(ErrorCode.LinkFailed, 'the link answer is malformed', { cause })
  }
  const { certificate, siblings, name, primary } = parsed
  const ours = constantTimeEqual(certificate.devicePub, device.publicKey) && constantTimeEqual(certificate.agreementPub, agreement.publicKey)
  if (!ours) {
    // Another device's answer (the link was used twice, say a QR code scanned by two): put it
    // back for that device, which is waiting for it, rather than lose it. Best effort.
    await mailbox.put(link.mailbox, LinkSlot.Answer, answer).catch(() => undefined)
    throw new PetrelError(ErrorCode.LinkFailed, 'this link was used by another device: make a new one for this device')
  }
  if (!(await verifyCertificate(certificate))) throw new PetrelError(ErrorCode.LinkFailed, 'the link answer does not certify this device')
  const verified: DeviceCertificate[] = []
  for (const s of siblings) if (constantTimeEqual(s.userPub, certificate.userPub) && (await verifyCertificate(s))) verified.push(s)
  const identity = await storeLinkedIdentity(store, device.secretKey, agreement.secretKey, certificate.bytes)
  return { identity, siblings: verified, name, primary }
}
