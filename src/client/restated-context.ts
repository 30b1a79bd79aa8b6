/**
 * The conversation's title and its members' names, said again for newcomers who cannot read
 * where they were first said.
 *
 * A 'from-join' member (or one let back in 'from-join', or a device of theirs linked later)
 * holds only the keys of the epochs since it came. The title and the names of members who
 * joined before were written under older keys: its device fills them as history it will never
 * hold (lost-history.ts), and showed a conversation with no title and members with no names.
 * Writing the same map entry again does not reach it: Yjs chains a map entry's new value to the
 * old one (its origin), and drops an item whose origin is such a fill. So each is said again
 * under an entry of the newcomer's epoch, which has no predecessor:
 *
 * ```
 * profiles[userId • '@' • epoch] = { name }   (owned by userId, as profiles[userId] is: inner-guard.ts)
 * meta['title' • '@' • epoch]     = title
 * ```
 *
 * `epoch` is decimal. A reader takes, per name and for the title, the entry of the highest epoch
 * up to the conversation's current one; the plain entry (`profiles[userId]`, `meta.title`) counts
 * as epoch -1. Entries of a later epoch are ignored (`meta` is anyone's to write: a member's
 * `title@999…` would have pinned the title for good), and so are entries whose epoch part is not
 * a plain decimal number. A userId is base64url, so it never holds '@'.
 *
 * Once an entry was said again, a change is written to the entry of the current epoch (or of the
 * highest one said, if later), and the plain entry left alone: written below it, the plain entry
 * would be outranked, and written beside it in one transaction, it drew the new entry into the
 * fill at a newcomer's device (the plain item's origin is history it never reads).
 */
import type * as Y from 'yjs'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { utf8Length } from '../shared/utf8-length.js'

export interface Profile {
  name?: string
}

const TITLE = 'title'

/** Longest title `setTitle` and `createConversation` take, in UTF-8 bytes (a title is shown on one line). */
export const MAX_TITLE_BYTES = 1024

/** Longest name `sayName` and `createClient({ name })` take, in UTF-8 bytes (shown beside every message). */
export const MAX_NAME_BYTES = 1024

/** Throws `invalid_argument` unless `name` is a string of at most `MAX_NAME_BYTES`. */
export function assertName(name: unknown, conversationId?: string): asserts name is string {
  if (typeof name !== 'string' || utf8Length(name) > MAX_NAME_BYTES) {
    throw new PetrelError(ErrorCode.InvalidArgument, `a name is a string of at most ${MAX_NAME_BYTES} UTF-8 bytes`, conversationId ? { conversationId } : {})
  }
}

/** Throws `invalid_argument` unless `title` is a string of at most `MAX_TITLE_BYTES`. */
export function assertTitle(title: unknown, conversationId?: string): asserts title is string {
  if (typeof title !== 'string' || utf8Length(title) > MAX_TITLE_BYTES) {
    throw new PetrelError(ErrorCode.InvalidArgument, `a title is a string of at most ${MAX_TITLE_BYTES} UTF-8 bytes`, conversationId ? { conversationId } : {})
  }
}

/** The key restating `base` (a userId, or 'title') at `epoch`. */
export const restatedKey = (base: string, epoch: number): string => `${base}@${epoch}`

/** `key` split into what it restates and the epoch it is of (-1 for a plain key); undefined if malformed. */
function splitKey(key: string): { base: string; epoch: number } | undefined {
  const at = key.indexOf('@')
  if (at === -1) return { base: key, epoch: -1 }
  const digits = key.slice(at + 1)
  if (!/^(0|[1-9][0-9]{0,14})$/.test(digits)) return undefined
  return { base: key.slice(0, at), epoch: Number(digits) }
}

/** What the title and names read as, from the inner document's `meta` and `profiles` maps. */
export class RestatedContext {
  /** userId → the name of its highest epoch; built on first use after a change of `profiles` or of the epoch. */
  private names: Map<string, { epoch: number; name: string | undefined }> | undefined
  private namesEpoch = -1

  /** `epoch`: the conversation's current key epoch, as this device has folded it. */
  constructor(
    private readonly profiles: () => Y.Map<Profile>,
    private readonly meta: () => Y.Map<unknown>,
    private readonly epoch: () => number,
  ) {}

  /** Call when `profiles` changed (before anything reads names again). */
  profilesChanged(): void {
    this.names = undefined
  }

  /** The person's name, or undefined when they gave none (or this device cannot read it). */
  name(userId: string): string | undefined {
    return this.nameEntry(userId)?.name
  }

  /** The conversation's title, or '' when none is known here. */
  title(): string {
    return this.titleEntry()?.title ?? ''
  }

  /**
   * The change that says `userId`'s name and the title again at `epoch`, or undefined when both
   * are said there already (by this device before a restart, or another device of the person's)
   * or there is nothing to say.
   */
  restatement(userId: string, epoch: number): ((profiles: Y.Map<Profile>, meta: Y.Map<unknown>) => void) | undefined {
    if (epoch > this.epoch()) return undefined
    const name = this.name(userId)
    const nameKey = restatedKey(userId, epoch)
    const sayName = name !== undefined && name !== '' && !this.profiles().has(nameKey)
    const title = this.title()
    const titleKey = restatedKey(TITLE, epoch)
    const sayTitle = title !== '' && !this.meta().has(titleKey)
    if (!sayName && !sayTitle) return undefined
    return (profiles, meta) => {
      if (sayName) profiles.set(nameKey, { name })
      if (sayTitle) meta.set(titleKey, title)
    }
  }

  /** Whether anything was said again at `epoch` (a round of saying again happened there). */
  saidAgainAt(epoch: number): boolean {
    const suffix = `@${epoch}`
    for (const key of this.meta().keys()) if (key.endsWith(suffix)) return true
    for (const key of this.profiles().keys()) if (key.endsWith(suffix)) return true
    return false
  }

  /** The change that gives `userId` the name `name`: the plain entry, or the current epoch's once one was said again. */
  naming(userId: string, name: string): (profiles: Y.Map<Profile>) => void {
    const key = this.changeKey(userId, this.nameEntry(userId)?.epoch)
    return (profiles) => profiles.set(key, { name })
  }

  /** The change that makes `title` the title: the plain entry, or the current epoch's once one was said again. */
  titling(title: string): (meta: Y.Map<unknown>) => void {
    const key = this.changeKey(TITLE, this.titleEntry()?.epoch)
    return (meta) => meta.set(key, title)
  }

  private changeKey(base: string, said: number | undefined): string {
    return said === undefined || said < 0 ? base : restatedKey(base, Math.max(said, this.epoch()))
  }

  private nameEntry(userId: string): { epoch: number; name: string | undefined } | undefined {
    const epoch = this.epoch()
    if (!this.names || this.namesEpoch !== epoch) {
      this.names = this.readNames(epoch)
      this.namesEpoch = epoch
    }
    return this.names.get(userId)
  }

  private titleEntry(): { epoch: number; title: string } | undefined {
    const current = this.epoch()
    let best: { epoch: number; title: string } | undefined
    for (const [key, value] of this.meta().entries()) {
      if (!key.startsWith(TITLE) || typeof value !== 'string') continue
      const split = splitKey(key)
      if (split?.base !== TITLE || split.epoch > current) continue
      if (!best || split.epoch > best.epoch) best = { epoch: split.epoch, title: value }
    }
    return best
  }

  private readNames(current: number): Map<string, { epoch: number; name: string | undefined }> {
    const names = new Map<string, { epoch: number; name: string | undefined }>()
    for (const [key, value] of this.profiles().entries()) {
      const split = splitKey(key)
      if (!split || split.epoch > current) continue
      const had = names.get(split.base)
      if (had && had.epoch >= split.epoch) continue
      const name = (value as Profile | undefined)?.name
      names.set(split.base, { epoch: split.epoch, name: typeof name === 'string' ? name : undefined })
    }
    return names
  }
}
