/**
 * What was typed and not sent, by conversation, kept in localStorage: the composer is shared, a
 * draft is not. Kept in memory only, a half-typed message was lost when another tab took this
 * device over ("Use here") or the page reloaded. Drafts stay on this browser, like the messages
 * in IndexedDB; nothing of them leaves the device.
 */
export class Drafts {
  private readonly key: string
  private readonly drafts: Map<string, string>

  /** `storageKey`: the profile's, so two people on one browser keep their drafts apart. */
  constructor(storageKey: string) {
    this.key = `petrel-drafts:${storageKey}`
    this.drafts = new Map(read(this.key))
  }

  get(conversationId: string): string {
    return this.drafts.get(conversationId) ?? ''
  }

  /** Keep `text` as the draft (none when it is blank), written at once: the tab may be taken over any moment. */
  set(conversationId: string, text: string): void {
    const had = this.drafts.get(conversationId)
    if (text.trim()) this.drafts.set(conversationId, text)
    else this.drafts.delete(conversationId)
    if (had === this.drafts.get(conversationId)) return
    try {
      if (this.drafts.size === 0) localStorage.removeItem(this.key)
      else localStorage.setItem(this.key, JSON.stringify([...this.drafts]))
    } catch {
      // A full or blocked localStorage keeps the draft in memory only, as before.
    }
  }
}

/** The stored drafts; whatever else is there (another version's shape, a hand edit) reads as none. */
function read(key: string): Array<[string, string]> {
  try {
    const parsed: unknown = JSON.parse(localStorage.getItem(key) ?? '[]')
    if (!Array.isArray(parsed)) return []
    return parsed.filter((e): e is [string, string] => Array.isArray(e) && e.length === 2 && typeof e[0] === 'string' && typeof e[1] === 'string')
  } catch {
    return []
  }
}
