/** Small DOM helpers: an element builder, dialogs, status ticks, avatars and date formatting. */
import type { Message } from '../../../src/client/index.js'

type Child = Node | string | false | null | undefined
type Attrs = Record<string, string | number | boolean | undefined | ((event: Event) => void)>

/** `el('button', { class: 'x', onclick: fn }, 'Label')`; text children are never parsed as HTML. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attrs)) {
    if (typeof value === 'function') node.addEventListener(name.slice(2), value)
    // Through the CSSOM: the relay's Content-Security-Policy refuses style attributes.
    else if (name === 'style') node.style.cssText = String(value)
    else if (value === true) node.setAttribute(name, '')
    else if (value !== false && value !== undefined) node.setAttribute(name, String(value))
  }
  for (const child of children) if (child !== false && child !== null && child !== undefined) node.append(child)
  return node
}

/** A person's id, shortened, for someone with no name known here. */
export const shortId = (userId: string): string => `${userId.slice(0, 6)}…`

export const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err))

/** What a conversation refused for good says to its person, in their words, not the relay's. */
export const refusalText = (err: { message: string }): string =>
  /you left/.test(err.message)
    ? 'You left this conversation.'
    : /removed|not member/.test(err.message)
      ? 'You were removed from this conversation, or this device was. What it held stays here.'
      : /invite (revoked|expired|used up)/.test(err.message)
        ? 'The invite link you joined with was stopped, has expired or was used up. Ask for a new one.'
        : `This conversation is closed to this device: ${err.message}`

/**
 * Text from other people (names, titles, messages) set apart from the app's own words around
 * it: a name ending in a right-to-left override (U+202E) turned "Mallory: I did it" around and
 * moved the colon. First-strong isolate … pop directional isolate (U+2068 … U+2069).
 */
export const isolate = (text: string): string => `\u2068${text}\u2069`

/**
 * An engine error in the person's words: the engine's own messages name relay reasons ("join
 * refused: invite revoked"), which told a newcomer nothing they could act on.
 */
export function friendlyError(err: unknown): string {
  const { code, message } = err as { code?: string; message?: string }
  const text = message ?? String(err)
  // A link cut short or changed in copying is not one that was stopped: it can be copied again.
  if (code === 'invite_invalid' && /not a Petrel invite|damaged|carries no invite|malformed/.test(text)) {
    return 'This invite link is incomplete or damaged. Copy the whole link again, or ask for a new one.'
  }
  if (code === 'invite_invalid' || /invite (revoked|expired|used up)|invite is for another/.test(text)) {
    return 'This invite link was stopped, has expired or was used up. Ask for a new one.'
  }
  const tooLong = code === 'too_large' ? /(\d+) bytes; the limit is (\d+)/.exec(text) : null
  if (tooLong) {
    const [size, limit] = [Number(tooLong[1]), Number(tooLong[2])]
    return `This message is too long: ${Math.ceil(size / 1024)} KB, and at most ${Math.floor(limit / 1024)} KB go in one message. Shorten it or send it in parts; it is still in the box.`
  }
  if (code === 'refused' && /for now/.test(text)) return 'The relay cannot take this conversation right now. The app tries again by itself.'
  if (code === 'refused' && /you left|removed|not member/.test(text)) return refusalText({ message: text })
  if (code === 'storage_failed') return `This device could not save: ${text}. Free some space; nothing is lost.`
  return text
}

/** A click on a modal dialog's backdrop (the dialog element itself, outside its box) closes it. */
export function closeOnBackdrop(dialog: HTMLDialogElement): void {
  dialog.addEventListener('click', (e) => {
    if (e.target !== dialog) return
    const r = dialog.getBoundingClientRect()
    if (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom) dialog.close()
  })
}

/** A button that copies a read-only field; where the clipboard is refused, the text is selected and `hint` says how. */
export function copyButton(field: HTMLInputElement | HTMLTextAreaElement, hint: HTMLElement, label = 'Copy', cls = 'primary'): HTMLButtonElement {
  const button = el('button', { type: 'button', class: cls }, label)
  const copy = async () => {
    if (!field.value) return
    try {
      await navigator.clipboard.writeText(field.value)
      button.textContent = 'Copied'
      setTimeout(() => {
        button.textContent = label
      }, 1500)
    } catch {
      field.select()
      hint.textContent = 'Press Ctrl+C (⌘C) to copy the selected text.'
    }
  }
  button.addEventListener('click', () => void copy())
  return button
}

/** An inline icon from a fixed set (static markup only). */
export function icon(name: keyof typeof ICONS, cls = 'icon'): HTMLSpanElement {
  const span = el('span', { class: cls, 'aria-hidden': 'true' })
  span.innerHTML = ICONS[name]
  return span
}

const svg = (viewBox: string, body: string) =>
  `<svg viewBox="${viewBox}" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linecap="round" stroke-linejoin="round">${body}</svg>`

const ICONS = {
  pending: svg('0 0 16 16', '<circle cx="8" cy="8" r="6"/><path d="M8 4.6V8l2.3 1.5"/>'),
  sent: svg('0 0 18 16', '<path d="M3.5 8.6l3.3 3.2 7.2-7.6"/>'),
  double: svg('0 0 18 16', '<path d="M1.2 8.6l3.3 3.2 7.2-7.6"/><path d="M8.1 11.1l.7.7 7.2-7.6"/>'),
  failed: svg('0 0 16 16', '<circle cx="8" cy="8" r="6.4"/><path d="M8 4.8v3.9M8 11.2v.1"/>'),
  plus: svg('0 0 24 24', '<path d="M12 5v14M5 12h14"/>'),
  plane: svg(
    '0 0 24 24',
    '<path d="M17.8 19.2 16 11l3.5-3.5C21 6 21.5 4 21 3c-1-.5-3 0-4.5 1.5L13 8 4.8 6.2c-.5-.1-.9.1-1.1.5l-.3.5c-.2.5-.1 1 .3 1.3L9 12l-2 3H4l-1 1 3 2 2 3 1-1v-3l3-2 3.5 5.3c.3.4.8.5 1.3.3l.5-.2c.4-.3.6-.7.5-1.2z"/>',
  ),
  send: svg('0 0 24 24', '<path d="M4 12l16-8-6 16-2.5-6.5L4 12z"/><path d="M11.5 13.5L20 4"/>'),
  back: svg('0 0 24 24', '<path d="M15 5l-7 7 7 7"/>'),
  link: svg('0 0 24 24', '<path d="M10 14a4 4 0 0 0 5.7 0l3-3a4 4 0 0 0-5.7-5.7l-1 1"/><path d="M14 10a4 4 0 0 0-5.7 0l-3 3a4 4 0 0 0 5.7 5.7l1-1"/>'),
  info: svg('0 0 24 24', '<circle cx="12" cy="12" r="9"/><path d="M12 11v6M12 7.5v.1"/>'),
  lock: svg('0 0 24 24', '<rect x="5" y="11" width="14" height="10" rx="2"/><path d="M8 11V8a4 4 0 0 1 8 0v3"/>'),
  devices: svg('0 0 24 24', '<rect x="2.5" y="5" width="13" height="9" rx="1.5"/><path d="M1 17.5h13"/><rect x="17" y="8" width="5.5" height="11" rx="1.2"/><path d="M19.3 16.5h.9"/>'),
  person: svg('0 0 24 24', '<rect x="3" y="5" width="18" height="14" rx="2"/><circle cx="9" cy="11" r="2.2"/><path d="M5.8 16c.6-1.6 1.8-2.4 3.2-2.4s2.6.8 3.2 2.4M14.5 10h3.5M14.5 13.5h3.5"/>'),
  personAdd: svg('0 0 24 24', '<circle cx="10" cy="8" r="3.5"/><path d="M3.5 19.5c.8-3.4 3.4-5.3 6.5-5.3s5.7 1.9 6.5 5.3M19 8v6M16 11h6"/>'),
}

const TICK_TITLES: Record<Message['status'], string> = {
  pending: 'Pending: saved on this device, waiting for a connection',
  sent: 'Sent: the relay has it',
  delivered: 'Delivered: on every member’s device',
  read: 'Read by every member',
  failed: 'Not sent',
}

/** The status tick of one of my messages: clock, ✓, grey ✓✓, blue ✓✓ or a failure mark. */
export function tick(status: Message['status'], error?: string): HTMLSpanElement {
  const shape = status === 'pending' ? 'pending' : status === 'sent' ? 'sent' : status === 'failed' ? 'failed' : 'double'
  const span = icon(shape, `tick tick-${status}`)
  span.removeAttribute('aria-hidden')
  span.setAttribute('role', 'img')
  span.setAttribute('aria-label', status)
  span.title = status === 'failed' && error ? `Not sent: ${error}` : TICK_TITLES[status]
  return span
}

/** A round avatar with initials, its colour derived from a stable seed. */
export function avatar(name: string, seed: string, cls = 'avatar'): HTMLSpanElement {
  const initials =
    name
      .trim()
      .split(/\s+/)
      .slice(0, 2)
      .map((w) => [...w][0]?.toUpperCase() ?? '')
      .join('') || '?'
  return el('span', { class: cls, style: `--hue:${hue(seed)}`, 'aria-hidden': 'true' }, initials)
}

/** A stable hue for a person or conversation. */
export function hue(seed: string): number {
  let hash = 0
  for (const ch of seed) hash = (hash * 31 + (ch.codePointAt(0) ?? 0)) >>> 0
  return hash % 360
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' })
const weekdayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long' })
const dateFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' })

export const clock = (t: number): string => timeFormat.format(t)

/** Local calendar day, for grouping. */
export function dayKey(t: number): string {
  const d = new Date(t)
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`
}

const daysAgo = (t: number, now: number): number => {
  const start = (x: number) => new Date(x).setHours(0, 0, 0, 0)
  return Math.round((start(now) - start(t)) / 86_400_000)
}

/** "Today", "Yesterday", a weekday within the week, else a date. */
export function dayLabel(t: number, now = Date.now()): string {
  const ago = daysAgo(t, now)
  if (ago === 0) return 'Today'
  if (ago === 1) return 'Yesterday'
  if (ago > 1 && ago < 7) return weekdayFormat.format(t)
  return dateFormat.format(t)
}

/** "Today, 4:51 PM": message info and tooltips. */
export const fullTime = (t: number, now = Date.now()): string => `${dayLabel(t, now)}, ${clock(t)}`

/** Time of the last message in the conversation list. */
export function listTime(t: number, now = Date.now()): string {
  return daysAgo(t, now) === 0 ? clock(t) : dayLabel(t, now)
}
