/**
 * Each message carries its author device's signature inside the inner document, so a
 * snapshot (one member's copy of everyone's messages) cannot put words in another member's
 * mouth for a device that reads history from it. Messages that arrive in envelopes are
 * already authenticated by the envelope signature and the authorship rules; these signatures
 * are checked for messages that came from a snapshot, before they are shown.
 *
 * ```
 * signed := varString room • varString messageId • varString text • varUint sentAt • varUint hlc
 *           • varUint counter • varString deviceId        domain 'message', by that device
 * ```
 * Everything a reader sees or orders by is covered: the text, the times, and the position.
 */
import * as encoding from 'lib0/encoding'
import { fromBase64Url, SignatureDomain, signedBytes, signWithDomain, verifyBatch } from '../shared/crypto/index.js'

export interface SignableMessage {
  t: string
  at: number
  h: number
  n: number
  d: string
}

function payload(room: string, id: string, m: SignableMessage): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, room)
  encoding.writeVarString(e, id)
  encoding.writeVarString(e, m.t)
  encoding.writeVarUint(e, m.at)
  encoding.writeVarUint(e, m.h)
  encoding.writeVarUint(e, m.n)
  encoding.writeVarString(e, m.d)
  return encoding.toUint8Array(e)
}

export function signMessage(room: string, id: string, m: SignableMessage, deviceSecret: Uint8Array): Promise<Uint8Array> {
  return signWithDomain(SignatureDomain.Message, deviceSecret, payload(room, id, m))
}

/**
 * Which of these messages carry a valid signature by a device of their author (the userId
 * the id starts with). `deviceOwner` maps a device id to its person, for every device ever
 * admitted to the conversation.
 */
export async function verifyMessages(
  room: string,
  items: ReadonlyArray<{ id: string; value: unknown }>,
  deviceOwner: (deviceId: string) => string | undefined,
): Promise<boolean[]> {
  const checks: Array<{ publicKey: Uint8Array; message: Uint8Array; signature: Uint8Array } | undefined> = items.map(({ id, value }) => {
    const m = value as Partial<SignableMessage> & { s?: unknown }
    if (!m || typeof m.t !== 'string' || typeof m.d !== 'string' || !(m.s instanceof Uint8Array) || m.s.length !== 64) return undefined
    if (![m.at, m.h, m.n].every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) return undefined
    if (deviceOwner(m.d) !== id.slice(0, id.indexOf('.'))) return undefined
    let publicKey: Uint8Array
    try {
      publicKey = fromBase64Url(m.d)
    } catch {
      return undefined
    }
    if (publicKey.length !== 32) return undefined
    return { publicKey, message: signedBytes(SignatureDomain.Message, payload(room, id, m as SignableMessage)), signature: m.s }
  })
  const present = checks.filter((c): c is NonNullable<typeof c> => c !== undefined)
  const verdicts = await verifyBatch(present, { handOverMessages: true })
  let i = 0
  return checks.map((c) => (c === undefined ? false : verdicts[i++]!))
}
