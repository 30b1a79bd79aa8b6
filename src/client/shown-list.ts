/**
 * The list a conversation shows: its messages in the one order every device agrees on (hybrid
 * clock, author, the author's counter, id), and each as the object the app renders.
 *
 * Built once, then kept: messages added since are sorted among themselves and merged in; when
 * only ticks move (acks, receipts, failures) the rows of this user's named (all of this user's
 * when none are named) are marked, and read again when next handed out, since another member's
 * message is always 'sent' and ticks never move a message; anything else (an entry overwritten
 * or deleted, a name changed, a message verified) rebuilds it. A row's message object is made
 * when first handed out, so `last(n)` costs n rows however many arrive. A message that has not
 * changed is the same object as last time, so a UI can skip re-rendering it.
 */
import type * as Y from 'yjs'

/** A message as the app sees it. */
export interface Message {
  id: string
  conversationId: string
  /** userId of the author, from the verified signer. */
  author: string
  authorName?: string
  text: string
  sentAt: number
  mine: boolean
  status: 'pending' | 'sent' | 'delivered' | 'read' | 'failed'
  error?: string
}

/** Stored shape of a message in the inner doc's `messages` map (a plain, immutable value). */
export interface StoredMessage {
  t: string
  at: number
  h: number
  n: number
  d: string
  /** The author device's signature (message-signature.ts), checked when shown from a snapshot. */
  s?: Uint8Array
  /** Or: its batch signature's entry, `messageBatches[author • '.' • b]`, and its place there. */
  b?: string
  i?: number
}

/** What the list reads from its conversation. */
export interface ShownSource {
  readonly conversationId: string
  /** This device's person. */
  readonly userId: string
  /** The inner document's messages map; asked for once, when the list is first read. */
  messages(): Y.Map<StoredMessage>
  /** An author's name (restated-context.ts). */
  name(userId: string): string | undefined
  /** Held back from the list: its signature is not checked yet, or it failed. */
  hidden(id: string): boolean
  /** Ticks (and the failure, if any) of a message of this user. */
  statusOf(id: string, author: string, v: StoredMessage): { status: Message['status']; error?: string }
}

/**
 * A shown message's row: its place in the order (hybrid clock, author, author's counter, id) and
 * the stored value it shows. The app's object is made when first asked for (`last` asks for
 * the newest few only): a device receiving 10,000 messages a second made one per message
 * whether or not a screen ever showed it.
 */
interface ShownRow {
  id: string
  author: string
  h: number
  n: number
  /** The stored value: a row lives only while its entry stands (an overwrite rebuilds the list). */
  v: StoredMessage
  /** The message as last handed out; undefined until first asked for. */
  m: Message | undefined
  /** `m` may be out of date: its ticks were said to have moved (this user's rows), or it came from before a rebuild. */
  stale: boolean
  /** `statusGen` when `m` was made: a row of this user's made before the last `statusesChanged()` is read again. */
  gen: number
}

const byShownOrder = (a: ShownRow, b: ShownRow): number =>
  a.h - b.h || (a.author < b.author ? -1 : a.author > b.author ? 1 : a.n - b.n || (a.id < b.id ? -1 : 1))

/** Over this many added keys never asked for, a rebuild is cheaper than holding them. */
const MAX_ADDED = 100_000

/**
 * @example
 * ```ts
 * const list = new ShownList(source)
 * list.changed(['alice.x1'])   // an entry written
 * for (const m of list.messages()) render(m)
 * ```
 */
export class ShownList {
  private cache: Message[] | undefined
  private rows: ShownRow[] | undefined
  /** The rows of `rows` by message id. */
  private ids: Map<string, ShownRow> | undefined
  /** Keys written since `rows` was built, none of them in it. */
  private added: string[] = []
  /**
   * Rows whose ticks moved (flagged `stale`) since `messages()` last read them: each is read
   * again when it is next handed out. `last` reads only those it hands out: at 10,000 sends a
   * second the sender's renders took 903 ms a round while every acked row was read again and
   * every arriving one made, on screen or not; 620 ms since.
   */
  private staleRows: ShownRow[] = []
  /** Moves on `statusesChanged()` (every row of this user's); `messages()` read them all at `fullPassGen`. */
  private statusGen = 0
  private fullPassGen = 0
  /**
   * The rows by id as they stood when the list was last dropped (`forget`), until it is built
   * again: a message whose stored value is the same is handed out as the same object as before
   * while nothing about it changed.
   */
  private previous: Map<string, ShownRow> | undefined

  constructor(private readonly source: ShownSource) {}

  private messagesMap: Y.Map<StoredMessage> | undefined
  private get stored(): Y.Map<StoredMessage> {
    this.messagesMap ??= this.source.messages()
    return this.messagesMap
  }

  /** Every shown message, oldest first; the array is read-only and kept until something changes. */
  messages(): Message[] {
    if (this.cache) return this.cache
    const rows = this.current()
    const authors = new Authors(this.source)
    // Ticks that moved: this user's rows read again (all of them after a `statusesChanged()`).
    if (this.fullPassGen !== this.statusGen) {
      const me = this.source.userId
      for (const row of rows) if (row.author === me) this.ensure(row, authors)
      this.fullPassGen = this.statusGen
    }
    for (const row of this.staleRows) if (row.stale) this.ensure(row, authors)
    this.staleRows = []
    const last = this.handed
    let out: Message[]
    if (last && last.rows === rows && last.out.length === rows.length) {
      // Nothing appended and no row replaced: the same messages, the same array.
      out = last.out
    } else if (last && last.rows === rows && last.out.length < rows.length) {
      // Only rows appended since the last array: it plus them, copied in one go rather than
      // row by row (copying every row per call was 28 ms of a 255-ms catch-up profile, whose
      // app polls messages().length).
      const added = new Array<Message>(rows.length - last.out.length)
      for (let i = 0; i < added.length; i++) added[i] = this.ensure(rows[last.out.length + i]!, authors)
      out = last.out.concat(added)
    } else {
      out = new Array<Message>(rows.length)
      for (let i = 0; i < rows.length; i++) out[i] = this.ensure(rows[i]!, authors)
    }
    this.handed = { rows, out }
    this.cache = out
    return out
  }

  /**
   * The last array `messages()` handed out and the rows it was made from: while rows are only
   * appended to that same array (and no row's message is replaced), the next is it plus them.
   */
  private handed: { rows: ShownRow[]; out: Message[] } | undefined

  /**
   * The newest `count` shown messages, oldest first: what a chat screen shows, without an array
   * of every message per change (at 40,000 messages that array is 320 KB, in V8's large-object
   * space, which only a full GC frees), and without making or re-reading the others.
   */
  last(count: number): Message[] {
    if (this.cache) return this.cache.slice(Math.max(0, this.cache.length - count))
    const rows = this.current()
    const authors = new Authors(this.source)
    const from = Math.max(0, rows.length - count)
    const out = new Array<Message>(rows.length - from)
    for (let i = from; i < rows.length; i++) out[i - from] = this.ensure(rows[i]!, authors)
    return out
  }

  /** The rows as they stand now: messages added since the last call sorted and merged in. */
  private current(): ShownRow[] {
    // Only messages added since the last list: sort those and merge them in. A catch-up of
    // 10,000 messages rebuilt the whole list after every batch, 3.5 ms each time.
    return this.rows && this.ids ? this.mergeAdded(this.rows, this.ids) : this.build()
  }

  /** The row's message, made or read again if it is not current. */
  private ensure(row: ShownRow, authors: Authors): Message {
    const have = row.m
    if (have !== undefined && !row.stale && (row.gen === this.statusGen || row.author !== this.source.userId)) return have
    const m = this.toMessage(row.id, row.v, authors, have)
    // An array handed out holds the old object: the next `messages()` makes a new one.
    if (have !== undefined && m !== have) this.handed = undefined
    row.m = m
    row.stale = false
    row.gen = this.statusGen
    return m
  }

  /** One shown message by id. */
  message(id: string): Message | undefined {
    const v = this.stored.get(id)
    if (!v || typeof v.t !== 'string' || this.source.hidden(id)) return undefined
    const authors = new Authors(this.source)
    // In a list built already, its row (merged in if it was just added): the object handed out
    // here is then the one the list holds.
    if (this.ids) this.current()
    const row = this.ids?.get(id)
    return row && row.v === v ? this.ensure(row, authors) : this.toMessage(id, v, authors, undefined)
  }

  /** Whether `id` is in the list as last built. */
  listed(id: string): boolean {
    return this.ids?.has(id) ?? false
  }

  /**
   * Something shown changed. `keys`: only these message entries were written; those not listed
   * yet are merged in on the next `messages()`, and one already listed rebuilds the list.
   */
  changed(keys?: Iterable<string>): void {
    this.cache = undefined
    const ids = this.ids
    if (keys && ids) {
      for (const k of keys) {
        if (ids.has(k)) {
          this.forget()
          return
        }
        this.added.push(k)
      }
      if (this.added.length > MAX_ADDED) this.forget()
    } else this.forget()
  }

  /**
   * Only the ticks or failures of this user's messages changed: all of them, or only those
   * of `ids`. Nothing is read here: each row is read again when it is next handed out.
   */
  statusesChanged(ids?: Iterable<string>): void {
    if (!ids) {
      this.statusGen++
      this.cache = undefined
      return
    }
    // Not built yet (an app that has not read the list): building reads every row afresh.
    const rows = this.ids
    if (!rows) return
    const me = this.source.userId
    for (const id of ids) {
      this.cache = undefined
      const row = rows.get(id)
      if (row === undefined || row.stale || row.m === undefined || row.author !== me) continue
      row.stale = true
      this.staleRows.push(row)
    }
  }

  private forget(): void {
    if (this.ids) this.previous = this.ids
    this.rows = undefined
    this.ids = undefined
    this.added = []
    this.staleRows = []
  }

  private build(): ShownRow[] {
    const authors = new Authors(this.source)
    const rows: ShownRow[] = []
    const ids = new Map<string, ShownRow>()
    const previous = this.previous
    this.previous = undefined
    // forEach, not the entries iterator: it allocates nothing per entry.
    this.stored.forEach((v, id) => {
      const row = this.shownRow(id, v, authors)
      if (!row) return
      // The message handed out before for this same value: read again when next asked for.
      const was = previous?.get(id)
      if (was !== undefined && was.v === v && was.m !== undefined) {
        row.m = was.m
        row.stale = true
      }
      rows.push(row)
      ids.set(id, row)
    })
    rows.sort(byShownOrder)
    this.rows = rows
    this.ids = ids
    this.added = []
    // Every row is made afresh when asked for.
    this.staleRows = []
    this.fullPassGen = this.statusGen
    return rows
  }

  private mergeAdded(rows: ShownRow[], ids: Map<string, ShownRow>): ShownRow[] {
    if (this.added.length === 0) return rows
    const authors = new Authors(this.source)
    const added: ShownRow[] = []
    for (const id of this.added) {
      if (ids.has(id)) continue
      const row = this.shownRow(id, this.stored.get(id), authors)
      if (!row) continue
      added.push(row)
      ids.set(id, row)
    }
    this.added = []
    if (added.length === 0) return rows
    added.sort(byShownOrder)
    let merged: ShownRow[]
    if (rows.length === 0 || byShownOrder(rows[rows.length - 1]!, added[0]!) < 0) {
      // The common case, new messages after the last: appended in place. A copy of every row
      // per change (rows.concat) was 90 MB of garbage on a device receiving 40,000 messages,
      // in arrays big enough for V8's large-object space, which only a full GC frees.
      for (const row of added) rows.push(row)
      merged = rows
    } else {
      merged = new Array<ShownRow>(rows.length + added.length)
      let i = 0
      let j = 0
      for (let k = 0; k < merged.length; k++) merged[k] = j >= added.length || (i < rows.length && byShownOrder(rows[i]!, added[j]!) <= 0) ? rows[i++]! : added[j++]!
    }
    this.rows = merged
    return merged
  }

  /** The row of a stored message that is shown, or undefined (not a message, or held back). */
  private shownRow(id: string, v: StoredMessage | undefined, authors: Authors): ShownRow | undefined {
    if (!v || typeof v.t !== 'string' || this.source.hidden(id)) return undefined
    return { id, author: authors.of(id), h: v.h, n: v.n, v, m: undefined, stale: false, gen: 0 }
  }

  /**
   * The app's view of a stored message: `last` (the object handed out before for this same
   * stored value, if any) while nothing about it changed.
   */
  private toMessage(id: string, v: StoredMessage, authors: Authors, last: Message | undefined): Message {
    const author = last && last.id === id ? last.author : authors.of(id)
    const mine = author === this.source.userId
    const { status, error } = mine ? this.source.statusOf(id, author, v) : SENT
    const authorName = authors.name(author)
    if (last && last.id === id && last.status === status && last.error === error && last.authorName === authorName) return last
    const m: Message = { id, conversationId: this.source.conversationId, author, text: v.t, sentAt: v.at, mine, status }
    if (authorName !== undefined) m.authorName = authorName
    if (error !== undefined) m.error = error
    return m
  }
}

const SENT: { status: Message['status']; error?: string } = { status: 'sent' }

/**
 * Authors and their names for one pass over the list. Runs of messages mostly share an author:
 * the previous author's string is reused (flat, its hash cached) and its name looked up once,
 * where a fresh slice per message had to be hashed for every profile lookup.
 */
class Authors {
  private last = ''
  private lastName: string | undefined
  private named = false

  constructor(private readonly names: Pick<ShownSource, 'name'>) {}

  /** The author part of a message id (up to its first '.'). */
  of(id: string): string {
    const last = this.last
    if (last !== '' && id.charCodeAt(last.length) === 46 && id.startsWith(last)) return last
    this.last = id.slice(0, id.indexOf('.'))
    this.named = false
    return this.last
  }

  name(author: string): string | undefined {
    if (author !== this.last || !this.named) {
      this.lastName = this.names.name(author)
      this.last = author
      this.named = true
    }
    return this.lastName
  }
}
