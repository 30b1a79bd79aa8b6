/**
 * Invite tokens: link-safe capabilities. Holding one is enough to join, with every admin
 * offline: it carries the admin-signed invite record (so the relay can check it), the
 * invite's secret key (to sign the join record; never sent anywhere) and the conversation's
 * keys. Put it in a URL fragment, which browsers never send to a server.
 *
 * ```
 * token   := 'petrel1.' base64url(payload)
 * payload := uint8 1 • varString room • varUint8Array inviteSecret(32) • varUint8Array inviteRecord
 *            • varUint nKeys • { varUint epoch • varUint8Array key(32) }{nKeys}
 * ```
 */
import * as encoding from 'lib0/encoding'
import { fromBase64Url, toBase64Url } from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { StrictReader } from '../shared/wire.js'

const PREFIX = 'petrel1.'

export interface InviteToken {
  room: string
  inviteSecret: Uint8Array
  inviteRecord: Uint8Array
  keys: Map<number, Uint8Array>
}

export function encodeInviteToken(t: InviteToken): string {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  encoding.writeVarString(e, t.room)
  encoding.writeVarUint8Array(e, t.inviteSecret)
  encoding.writeVarUint8Array(e, t.inviteRecord)
  encoding.writeVarUint(e, t.keys.size)
  for (const [epoch, key] of t.keys) {
    encoding.writeVarUint(e, epoch)
    encoding.writeVarUint8Array(e, key)
  }
  return PREFIX + toBase64Url(encoding.toUint8Array(e))
}

export function decodeInviteToken(token: string): InviteToken {
  let raw = token.trim().replace(/^.*#/, '')
  // A fragment of parameters (`#invite=petrel1.…`, the links the demo app and EMBEDDING.md make):
  // the token never holds '=' (unpadded base64url), so one that does is a parameter list.
  if (raw.includes('=')) raw = new URLSearchParams(raw).get('invite')?.trim() ?? raw
  if (!raw.startsWith(PREFIX)) throw new PetrelError(ErrorCode.InviteInvalid, 'not a Petrel invite')
  try {
    const r = new StrictReader(fromBase64Url(raw.slice(PREFIX.length)))
    if (r.uint8() !== 1) throw new PetrelError(ErrorCode.InviteInvalid, 'invite from a newer version of Petrel')
    const room = r.varString(64)
    const inviteSecret = r.varBytes(32)
    const inviteRecord = r.varBytes(16 * 1024)
    const n = r.varUint(1024)
    const keys = new Map<number, Uint8Array>()
    for (let i = 0; i < n; i++) {
      const epoch = r.varUint(0xffffffff)
      const key = r.varBytes(32)
      if (key.length !== 32) throw new PetrelError(ErrorCode.InviteInvalid, 'invite key has the wrong length')
      keys.set(epoch, key)
    }
    r.end()
    if (inviteSecret.length !== 32) throw new PetrelError(ErrorCode.InviteInvalid, 'invite secret has the wrong length')
    return { room, inviteSecret, inviteRecord, keys }
  } catch (err) {
    if (err instanceof PetrelError && err.code === ErrorCode.InviteInvalid) throw err
    throw new PetrelError(ErrorCode.InviteInvalid, `invite is damaged: ${(err as Error).message}`, { cause: err })
  }
}
