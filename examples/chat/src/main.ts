/// <reference types="vite/client" />
/**
 * Petrel's demo messenger: plain DOM on the public client API, nothing else. Every message is
 * written to IndexedDB before it is shown, so the app works offline (a service worker keeps
 * the shell) and sends what waited as soon as a connection returns.
 *
 * In your own app, import from the package instead: `import { createClient } from 'petrel/client'`.
 */
import { type Conversation, createClient, type Message, type PetrelClient } from '../../../src/client/index.js'
import './style.css'
import { AddPersonSheet, DevicesSheet, IdentitySheet } from './people.js'
import { avatar, clock, closeOnBackdrop, copyButton, dayKey, dayLabel, el, errorText, friendlyError, fullTime, hue, icon, listTime, isolate, refusalText, shortId, tick } from './view.js'
import { ConversationSheet } from './conversation-sheet.js'
import { Drafts } from './drafts.js'
import { firstRun, loadProfile, type Profile } from './welcome.js'

const TAKE_OVER = 'petrel-chat:take-over'
/** How long an invite link made in the app works: a link found later in a browser's history is dead. */
const INVITE_LIFETIME_MS = 7 * 24 * 60 * 60 * 1000
const OPEN = 'petrel-chat:open'
const AIRPLANE = 'petrel-chat:airplane'
const PERSIST_ASKED = 'petrel-chat:persist-asked'
/** Still connecting after this long, the banner says the relay cannot be reached (the client keeps trying). */
const UNREACHABLE_AFTER_MS = 5_000
/** An invite link kept to show again: its token, expiry, and who were members when it was made (older entries lack them). */
interface KeptLink {
  token: string
  expiresAt: number
  members?: string[]
}

/** Re-announce "typing" this often while keys are pressed (receivers forget it after 5 s). */
const TYPING_REFRESH_MS = 2_000

const root = document.getElementById('app')!
/** Its title; before the first sync of a joined one (no title, no messages, nobody else known yet), that it is joining. */
const titleOf = (conv: Conversation): string =>
  conv.title ||
  // Refused before it ever synced (a stopped link opened offline): not "Joining…" for good.
  (conv.refusal ? 'Not joined' : !conv.synced && conv.messages().length === 0 && conv.members().length <= 1 ? 'Joining…' : 'Untitled conversation')

async function boot(): Promise<void> {
  // Offline after the first visit: the service worker keeps the app shell (production build only).
  if (import.meta.env.PROD && 'serviceWorker' in navigator && navigator.onLine) {
    navigator.serviceWorker.register('/sw.js').catch(() => {})
  }
  const stored = loadProfile()
  // A device linked on the first-run screen comes with its client already open.
  // Arriving new from an invite link, choosing a name on the first-run screen (which says so) is
  // the consent to join; anyone else is asked first.
  const invitedNew = !stored && inviteInLink() !== undefined
  const { profile, client: linked } = stored ? { profile: stored } : await firstRun(root, relayUrl(), invitedNew)
  askPersistentStorage()
  const client = linked ?? (await openClient(profile))
  if (!client) return openElsewhere()
  client.on('displaced', openElsewhere)
  await new ChatApp(client, profile, linked !== undefined, invitedNew && linked === undefined).start()
}

/** The invite token in the address bar's fragment (`#invite=<token>`), if any. */
function inviteInLink(): string | undefined {
  return new URLSearchParams(location.hash.slice(1)).get('invite') ?? undefined
}

/** One tab owns this device's storage and socket; "Use here" in another tab takes it over. */
async function openClient(profile: Profile): Promise<PetrelClient | undefined> {
  const takeOver = sessionStorage.getItem(TAKE_OVER) === '1'
  sessionStorage.removeItem(TAKE_OVER)
  try {
    return await createClient({
      relay: relayUrl(),
      name: profile.name,
      storageKey: profile.storageKey,
      tabs: takeOver ? 'take-over' : 'fail',
    })
  } catch (err) {
    if ((err as { code?: string }).code === 'device_in_use') return undefined
    throw err
  }
}

/** Another tab has Petrel open: say so, and offer to move it here (the other tab closes it). */
function openElsewhere(): void {
  const useHere = () => {
    sessionStorage.setItem(TAKE_OVER, '1')
    location.reload()
  }
  root.replaceChildren(
    el(
      'main',
      { class: 'welcome' },
      el(
        'div',
        { class: 'welcome-card', role: 'alert' },
        icon('lock', 'welcome-logo'),
        el('h1', {}, 'Petrel is open in another tab'),
        el('p', {}, 'One tab at a time keeps your messages in order. Messages you sent there are safe and keep going out from that tab.'),
        el('button', { type: 'button', class: 'primary', onclick: useHere }, 'Use here'),
      ),
    ),
  )
  root.removeAttribute('aria-busy')
}

/** The relay serves this app, so it is at this very host; `npx vite examples/chat` (dev) uses :8787. */
function relayUrl(): string {
  if (import.meta.env.DEV) return import.meta.env.VITE_PETREL_RELAY ?? `ws://${location.hostname}:8787`
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`
}

/** Ask once that the browser never evicts this origin's storage (the outbox lives there). */
function askPersistentStorage(): void {
  if (localStorage.getItem(PERSIST_ASKED) || !navigator.storage?.persist) return
  localStorage.setItem(PERSIST_ASKED, '1')
  navigator.storage.persist().catch(() => {})
}

class ChatApp {
  private convs: Conversation[] = []
  private current: Conversation | undefined
  /** When a conversation was created or joined here, to sort ones without messages. */
  private readonly touched = new Map<string, number>()
  private airplane = localStorage.getItem(AIRPLANE) === '1'
  private renderQueued = false
  /** The title each conversation was last seen with, to tell of a rename (this device's own too). */
  private readonly titles = new Map<string, string>()
  /** The conversation the rename dialog was opened for (the one on screen may change meanwhile). */
  private renaming: Conversation | undefined
  /** Why the last invite link did not work, shown where an empty list would leave a newcomer guessing. */
  private joinProblem: string | undefined
  /** Since when this device has been trying to reach the relay (undefined while online or offline), and the timer that re-draws the banner then. */
  private connectingSince: number | undefined
  private unreachableTimer: ReturnType<typeof setTimeout> | undefined
  private stickToBottom = false
  private typingSentAt = 0
  private info: { conv: Conversation; id: string } | undefined
  /** The invite the invite dialog shows. */
  private invite: { conv: Conversation; token: string } | undefined
  /** Rendered rows of the open conversation, by message id or day, with what they show. */
  private readonly rows = new Map<string, { node: HTMLElement; sig: string }>()
  private readonly observer: IntersectionObserver
  private observed: Element | undefined
  private lastVisible = false
  private toastTimer: ReturnType<typeof setTimeout> | undefined

  private readonly shell = el('div', { class: 'shell', 'data-view': 'list' })
  private readonly banner = el('div', { class: 'banner', role: 'status' })
  private readonly list = el('nav', { class: 'conv-list', 'aria-label': 'Conversations' })
  private readonly airplaneButton = el('button', { class: 'icon-btn airplane', type: 'button', 'aria-label': 'Airplane mode', title: 'Airplane mode' }, icon('plane'))
  private readonly emptyPane = el('section', { class: 'placeholder' })
  private readonly convPane = el('section', { class: 'conversation', hidden: true })
  private readonly headAvatar = el('span', { class: 'head-avatar' })
  /** The title, a button: it opens "Conversation info" (members, rename, leave), as WhatsApp's header does. */
  private readonly headTitleButton = el('button', { type: 'button', class: 'head-title-btn', title: 'Conversation info' })
  private readonly headTitle = el('h2', { class: 'head-title' }, this.headTitleButton)
  private readonly headSub = el('p', { class: 'head-sub' })
  private readonly messagesBox = el('div', { class: 'messages', role: 'log', 'aria-label': 'Messages' })
  private readonly sendButton = el('button', { type: 'submit', class: 'send', 'aria-label': 'Send', title: 'Send' }, icon('send'))
  private readonly input = el('textarea', { rows: 1, placeholder: 'Message', 'aria-label': 'Message', enterkeyhint: 'send' })
  /** Only admins make invites: offered to others, it only failed. */
  private readonly invitePill = el('button', { class: 'pill', type: 'button', onclick: () => void this.showInvite() }, icon('link'), el('span', { class: 'pill-label' }, 'Invite'))
  /** Why the relay refused this conversation for good (removed, left): it stays, read-only. */
  private readonly refusalNote = el('p', { class: 'refusal-note', role: 'status', hidden: true })
  private readonly newDialog = el('dialog', { class: 'sheet', 'aria-label': 'New conversation' })
  private readonly inviteDialog = el('dialog', { class: 'sheet', 'aria-label': 'Invite' })
  private readonly inviteLink = el('input', { class: 'invite-link', readonly: true, 'aria-label': 'Invite link' })
  private readonly inviteHint = el('p', { class: 'muted small' })
  private readonly infoDialog = el('dialog', { class: 'sheet', 'aria-label': 'Message info' })
  private readonly renameDialog = el('dialog', { class: 'sheet', 'aria-label': 'Rename conversation' })
  private readonly renameInput = el('input', { name: 'rename', maxlength: 80, autocomplete: 'off' })

  private readonly joinDialog = el('dialog', { class: 'sheet', 'aria-label': 'Join conversation' })
  private readonly drafts: Drafts
  private readonly conversationSheet: ConversationSheet
  private readonly infoBody = el('div', { class: 'info-body' })
  private readonly toastBox = el('div', { class: 'toast', role: 'alert', hidden: true })
  private readonly addPersonButton = el('button', { class: 'icon-btn', type: 'button', 'aria-label': 'Add person', title: 'Add person', hidden: true }, icon('personAdd'))
  private readonly devicesSheet: DevicesSheet
  private readonly identitySheet: IdentitySheet
  private readonly addPersonSheet: AddPersonSheet

  constructor(
    private readonly client: PetrelClient,
    private readonly profile: Profile,
    /** This device was just linked on the first-run screen: its conversations are on their way. */
    private readonly justLinked = false,
    /** The person chose their name on a first-run screen that said they were joining: no need to ask again. */
    private joinConsented = false,
  ) {
    this.drafts = new Drafts(profile.storageKey)
    this.conversationSheet = new ConversationSheet(client.userId, (conv) => this.showRename(conv), (text) => this.toast(text))
    const toast = (text: string) => this.toast(text)
    this.devicesSheet = new DevicesSheet(client, toast)
    this.identitySheet = new IdentitySheet(client)
    this.addPersonSheet = new AddPersonSheet(toast)
    this.observer = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) if (entry.target === this.observed) this.lastVisible = entry.isIntersecting
        this.maybeMarkRead()
      },
      { root: this.messagesBox },
    )
    this.build()
  }

  async start(): Promise<void> {
    root.replaceChildren(
      this.shell,
      this.newDialog,
      this.inviteDialog,
      this.infoDialog,
      this.renameDialog,
      this.conversationSheet.dialog,
      this.joinDialog,
      this.devicesSheet.dialog,
      this.identitySheet.dialog,
      this.addPersonSheet.dialog,
      this.toastBox,
    )
    root.removeAttribute('aria-busy')
    this.client.on('connection', () => this.connectionChanged())
    this.connectionChanged()
    this.client.on('error', (err) => {
      const conv = err.conversationId ? this.convs.find((c) => c.id === err.conversationId) : undefined
      // A refusal of the conversation on screen is said in place (the note above the composer).
      if (conv && conv === this.current && conv.refusal === err) return
      this.toast(conv ? `“${titleOf(conv)}”: ${friendlyError(err)}` : friendlyError(err))
    })
    // Added by an admin, or brought in by another device of this person: no reload needed.
    // Listening before the list below is read leaves no gap between the two.
    this.client.on('conversation', (conv) => {
      this.touched.set(conv.id, Date.now())
      this.track(conv)
      this.render()
    })
    window.addEventListener('online', () => this.render())
    window.addEventListener('offline', () => this.render())
    window.addEventListener('hashchange', () => void this.joinFromLink())
    document.addEventListener('visibilitychange', () => this.maybeMarkRead())
    if (this.airplane) this.client.disconnect()
    for (const conv of await this.client.conversations()) this.track(conv)
    this.open(this.convs.find((c) => c.id === localStorage.getItem(OPEN)))
    if (this.justLinked) this.toast('Device linked: your conversations are on their way.')
    await this.joinFromLink()
  }

  // ------------------------------------------------------------------ layout

  private build(): void {
    this.airplaneButton.addEventListener('click', () => this.toggleAirplane())
    const sidebar = el(
      'aside',
      { class: 'sidebar' },
      el(
        'header',
        { class: 'side-head' },
        el(
          'button',
          { class: 'me-btn', type: 'button', 'aria-label': 'My identity', title: 'My identity', onclick: () => void this.identitySheet.show() },
          avatar(this.profile.name, this.client.userId, 'avatar me'),
          el('span', { class: 'me' }, el('strong', {}, this.profile.name), el('span', { class: 'me-state' })),
        ),
        this.airplaneButton,
        el('button', { class: 'icon-btn', type: 'button', 'aria-label': 'Devices', title: 'Devices', onclick: () => this.devicesSheet.show() }, icon('devices')),
        el('button', { class: 'icon-btn', type: 'button', 'aria-label': 'New conversation', title: 'New conversation', onclick: () => this.showNewDialog() }, icon('plus')),
      ),
      this.list,
      el('p', { class: 'side-foot' }, icon('lock', 'icon small-icon'), 'Messages are end-to-end encrypted'),
    )
    this.emptyPane.append(
      icon('lock', 'placeholder-logo'),
      el('h2', {}, 'Petrel'),
      el('p', {}, 'Pick a conversation, or start one and share its invite link.'),
      el('p', { class: 'muted small' }, 'Messages are end-to-end encrypted; the relay stores only sealed envelopes.'),
    )
    const composer = el(
      'form',
      {
        class: 'composer',
        onsubmit: (e) => {
          e.preventDefault()
          void this.send()
        },
      },
      this.input,
      this.sendButton,
    )
    this.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault()
        void this.send()
      }
    })
    this.input.addEventListener('input', () => this.onInput())
    this.addPersonButton.addEventListener('click', () => this.current && this.addPersonSheet.show(this.current))
    this.headTitleButton.addEventListener('click', () => this.current && this.conversationSheet.show(this.current))
    this.convPane.append(
      el(
        'header',
        { class: 'conv-head' },
        el('button', { class: 'icon-btn back', type: 'button', 'aria-label': 'Back to conversations', onclick: () => this.open(undefined) }, icon('back')),
        this.headAvatar,
        el('div', { class: 'head-text' }, this.headTitle, this.headSub),
        this.addPersonButton,
        this.invitePill,
      ),
      this.messagesBox,
      this.refusalNote,
      composer,
    )
    this.shell.append(this.banner, sidebar, el('main', { class: 'pane' }, this.emptyPane, this.convPane))
    this.buildDialogs()
  }

  private buildDialogs(): void {
    const title = el('input', { name: 'title', maxlength: 80, placeholder: 'e.g. Weekend trip', 'aria-label': 'Title', autocomplete: 'off' })
    this.newDialog.append(
      el(
        'form',
        {
          onsubmit: (e) => {
            e.preventDefault()
            this.newDialog.close()
            void this.create(title.value.trim())
            title.value = ''
          },
        },
        el('h2', {}, 'New conversation'),
        el('label', { class: 'field' }, el('span', {}, 'Title'), title),
        el(
          'div',
          { class: 'actions' },
          el('button', { type: 'button', class: 'ghost', onclick: () => this.newDialog.close() }, 'Cancel'),
          el('button', { type: 'submit', class: 'primary' }, 'Create'),
        ),
      ),
    )
    const copy = copyButton(this.inviteLink, this.inviteHint, 'Copy link')
    this.inviteDialog.append(
      el('h2', {}, 'Invite people'),
      el(
        'p',
        {},
        'For the next 7 days anyone with this link can join and read the whole conversation. Its secret is after the #, a part of the address browsers never send to a server (they do keep it in their history).',
      ),
      this.inviteLink,
      this.inviteHint,
      el(
        'div',
        { class: 'actions' },
        el('button', { type: 'button', class: 'ghost', onclick: () => void this.stopInvite() }, 'Stop this link'),
        el('button', { type: 'button', class: 'ghost', onclick: () => this.inviteDialog.close() }, 'Done'),
        copy,
      ),
    )
    this.renameDialog.append(
      el(
        'form',
        {
          onsubmit: (e) => {
            e.preventDefault()
            this.renameDialog.close()
            const conv = this.renaming
            const title = this.renameInput.value.trim()
            if (conv && title && title !== conv.title) void conv.setTitle(title).catch((err) => this.toast(`Could not rename: ${errorText(err)}`))
          },
        },
        el('h2', {}, 'Rename conversation'),
        el('p', { class: 'muted small' }, 'The new title shows for everyone in the conversation.'),
        el('label', { class: 'field' }, el('span', {}, 'Rename to'), this.renameInput),
        el(
          'div',
          { class: 'actions' },
          el('button', { type: 'button', class: 'ghost', onclick: () => this.renameDialog.close() }, 'Cancel'),
          el('button', { type: 'submit', class: 'primary' }, 'Save'),
        ),
      ),
    )
    this.infoDialog.append(
      el('h2', {}, 'Message info'),
      this.infoBody,
      el('div', { class: 'actions' }, el('button', { type: 'button', class: 'ghost', onclick: () => this.infoDialog.close() }, 'Close')),
    )
    this.infoDialog.addEventListener('close', () => {
      this.info = undefined
    })
    for (const dialog of [this.newDialog, this.inviteDialog, this.infoDialog, this.renameDialog]) closeOnBackdrop(dialog)
  }

  // ------------------------------------------------------------------ state

  /** Each conversation's member ids as last seen (noticeMembers). */
  private readonly memberKeys = new Map<string, string>()

  private track(conv: Conversation): void {
    if (this.convs.includes(conv)) return
    this.convs.push(conv)
    this.titles.set(conv.id, conv.title)
    conv.subscribe(() => {
      this.noticeRename(conv)
      this.noticeMembers(conv)
      this.render()
    })
  }

  /**
   * Members changed: the kept invite link learns who joined, and is dropped once one of them
   * has left or was removed (a link older than their leave can never let them back; the next
   * Invite makes a fresh one).
   */
  private noticeMembers(conv: Conversation): void {
    const ids = conv.members().map((m) => m.userId)
    const key = ids.join(',')
    if (this.memberKeys.get(conv.id) === key) return
    this.memberKeys.set(conv.id, key)
    const kept = this.keptLinks()[conv.id]
    if (!kept) return
    const now = new Set(ids)
    const seen = kept.members ?? []
    if (seen.some((id) => !now.has(id))) return this.keepLink(conv.id, undefined)
    const joined = ids.filter((id) => !seen.includes(id))
    if (joined.length > 0) this.keepLink(conv.id, { ...kept, members: [...seen, ...joined] })
  }

  /** Someone renamed a conversation: say so once (a title that only arrives, for a newcomer, is no rename). */
  private noticeRename(conv: Conversation): void {
    const was = this.titles.get(conv.id)
    const now = conv.title
    if (was === now) return
    this.titles.set(conv.id, now)
    if (was && now) this.toast(`“${isolate(was)}” is now called “${isolate(now)}”`)
  }

  private open(conv: Conversation | undefined): void {
    if (this.current && this.current !== conv) {
      this.stopTyping()
      this.drafts.set(this.current.id, this.input.value)
    }
    const switched = conv !== undefined && conv !== this.current
    if (switched) this.input.value = this.drafts.get(conv.id)
    const left = conv === undefined ? this.current : undefined
    this.current = conv
    if (conv) localStorage.setItem(OPEN, conv.id)
    else localStorage.removeItem(OPEN)
    this.rows.clear()
    this.messagesBox.replaceChildren()
    if (this.observed) this.observer.unobserve(this.observed)
    this.observed = undefined
    this.lastVisible = false
    this.stickToBottom = true
    this.renderNow()
    // Measured once the pane shows: hidden, a restored multi-line draft measured one line tall.
    if (switched) this.autoGrow()
    // Keyboard focus follows: the composer (not on phones, where it would open the keyboard:
    // the header's title then), and back in the list, the row of the conversation just left.
    if (conv && window.matchMedia('(min-width: 721px)').matches) this.input.focus()
    else if (conv) this.headTitleButton.focus()
    else if (left) this.list.querySelector<HTMLElement>(`[data-conv="${CSS.escape(left.id)}"]`)?.focus()
  }

  private async create(title: string): Promise<void> {
    try {
      const conv = await this.client.createConversation({ title: title || 'New conversation' })
      this.touched.set(conv.id, Date.now())
      this.track(conv)
      this.open(conv)
    } catch (err) {
      this.toast(`Could not create the conversation: ${errorText(err)}`)
    }
  }

  /**
   * Open an invite link (`#invite=<token>`): clear the secret from the address bar, ask, then
   * join. Any page can send a browser to such a link; joining shows this person's name to the
   * conversation's members, so it takes their click (unless they just chose that name to join).
   */
  private async joinFromLink(): Promise<void> {
    const token = inviteInLink()
    if (!token) return
    history.replaceState(null, '', location.pathname + location.search)
    const consented = this.joinConsented
    this.joinConsented = false
    if (!consented && !(await this.askToJoin())) return
    this.toast('Joining…', 20_000)
    try {
      // Held and not refused (one this person left is joined again, not "already in").
      const held = new Set((await this.client.conversations()).filter((c) => c.refusal === undefined).map((c) => c.id))
      const conv = await this.client.join(token)
      if (held.has(conv.id)) {
        // join() returns the one held: not "Joined" again.
        this.open(conv)
        this.toast(`You are already in “${isolate(titleOf(conv))}”`)
        return
      }
      this.joinProblem = undefined
      this.touched.set(conv.id, Date.now())
      this.track(conv)
      this.open(conv)
      this.toast(this.client.connection === 'online' ? `Joined “${titleOf(conv)}”` : 'Joined: the conversation arrives when you are online')
    } catch (err) {
      // Kept in the list too: a newcomer's app is empty, and a toast is gone in seconds.
      this.joinProblem = `Could not join: ${friendlyError(err)}`
      this.toast(this.joinProblem)
      this.render()
    }
  }

  private async send(): Promise<void> {
    const conv = this.current
    const text = this.input.value.trim()
    if (!conv || !text) return
    this.input.value = ''
    this.drafts.set(conv.id, '')
    this.autoGrow()
    this.stopTyping()
    this.stickToBottom = true
    try {
      await conv.send(text)
    } catch (err) {
      // Back in the composer, before whatever was typed meanwhile (nothing of it is lost).
      const typed = this.current === conv ? this.input.value : this.drafts.get(conv.id)
      const back = typed.trim() ? `${text}\n${typed}` : text
      this.drafts.set(conv.id, back)
      if (this.current === conv) {
        this.input.value = back
        this.autoGrow()
      }
      this.toast((err as { code?: string }).code === 'too_large' ? friendlyError(err) : `Not sent: ${errorText(err)}`)
    }
  }

  private onInput(): void {
    this.autoGrow()
    const conv = this.current
    if (!conv) return
    this.drafts.set(conv.id, this.input.value)
    if (!this.input.value.trim()) return this.stopTyping()
    if (Date.now() - this.typingSentAt < TYPING_REFRESH_MS) return
    this.typingSentAt = Date.now()
    conv.setTyping(true)
  }

  private stopTyping(): void {
    if (this.typingSentAt === 0) return
    this.typingSentAt = 0
    this.current?.setTyping(false)
  }

  private autoGrow(): void {
    this.input.style.height = 'auto'
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`
  }

  private toggleAirplane(): void {
    this.airplane = !this.airplane
    if (this.airplane) {
      localStorage.setItem(AIRPLANE, '1')
      this.client.disconnect()
    } else {
      localStorage.removeItem(AIRPLANE)
      this.client.connect()
    }
    this.render()
  }

  /** Blue ✓✓ for the senders once the newest message is on screen and the tab is visible. */
  private maybeMarkRead(): void {
    const conv = this.current
    if (!conv || !this.lastVisible || document.visibilityState !== 'visible' || conv.unreadCount() === 0) return
    conv.markRead().catch((err) => this.toast(errorText(err)))
  }

  // ------------------------------------------------------------------ rendering

  /** Coalesce: many engine events in one turn make one render. */
  private render(): void {
    if (this.renderQueued) return
    this.renderQueued = true
    queueMicrotask(() => this.renderNow())
  }

  private renderNow(): void {
    this.renderQueued = false
    this.renderBanner()
    this.renderList()
    this.renderConversation()
    this.renderInfo()
    this.devicesSheet.render()
    this.conversationSheet.render()
    this.maybeMarkRead()
  }

  /** "Connecting…" for a moment, then that the relay cannot be reached, while the client keeps trying. */
  private connectionChanged(): void {
    clearTimeout(this.unreachableTimer)
    this.unreachableTimer = undefined
    if (this.client.connection !== 'connecting') this.connectingSince = undefined
    else {
      this.connectingSince ??= Date.now()
      const left = this.connectingSince + UNREACHABLE_AFTER_MS - Date.now()
      if (left > 0) this.unreachableTimer = setTimeout(() => this.connectionChanged(), left)
    }
    this.render()
  }

  private renderBanner(): void {
    const state = this.client.connection
    const unreachable = this.connectingSince !== undefined && Date.now() - this.connectingSince >= UNREACHABLE_AFTER_MS
    this.banner.dataset.unreachable = String(unreachable)
    const text =
      state === 'online'
        ? 'Online'
        : state === 'connecting'
          ? unreachable
            ? 'Cannot reach the relay: still trying. Messages wait on this device.'
            : 'Connecting…'
          : this.airplane
            ? 'Airplane mode: messages wait on this device until you turn it off.'
            : !navigator.onLine
              ? 'You are offline: messages wait on this device until you are back.'
              : 'Not connected to the relay.'
    this.banner.dataset.state = state
    this.banner.textContent = text
    this.shell.dataset.connection = state
    this.airplaneButton.setAttribute('aria-pressed', String(this.airplane))
    const me = this.shell.querySelector('.me-state')
    if (me) me.textContent = state === 'online' ? 'online' : state === 'connecting' ? 'connecting…' : 'offline'
  }

  private sorted(): Conversation[] {
    const last = (c: Conversation) => Math.max(c.messages().at(-1)?.sentAt ?? 0, this.touched.get(c.id) ?? 0)
    return [...this.convs].sort((a, b) => last(b) - last(a))
  }

  private renderList(): void {
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.conv
    const items: HTMLElement[] = this.sorted().map((conv) => {
      const last = conv.messages().at(-1)
      const unread = conv.unreadCount()
      const typing = conv.typing()
      const preview = typing.length
        ? [el('span', { class: 'typing' }, 'typing…')]
        : last
          ? [last.mine ? tick(last.status, last.error) : null, `${last.mine ? 'You' : isolate(last.authorName || shortId(last.author))}: ${isolate(last.text)}`]
          : ['No messages yet']
      return el(
        'button',
        { class: 'conv-item', type: 'button', 'data-conv': conv.id, 'aria-current': conv === this.current ? 'true' : undefined, onclick: () => this.open(conv) },
        avatar(titleOf(conv), conv.id),
        el(
          'span',
          { class: 'conv-main' },
          el('span', { class: 'conv-row' }, el('span', { class: 'conv-title' }, titleOf(conv)), el('time', { class: 'conv-time' }, last ? listTime(last.sentAt) : '')),
          el(
            'span',
            { class: 'conv-row' },
            el('span', { class: 'conv-last' }, ...preview),
            unread > 0 ? el('span', { class: 'badge', 'aria-label': `${unread} unread` }, String(unread)) : null,
          ),
        ),
      )
    })
    if (items.length === 0) {
      items.push(
        el(
          'div',
          { class: 'list-empty' },
          el('p', {}, 'No conversations yet.'),
          this.joinProblem ? el('p', { class: 'form-error', role: 'status' }, this.joinProblem) : null,
          el('button', { type: 'button', class: 'primary', onclick: () => this.showNewDialog() }, 'New conversation'),
        ),
      )
    }
    this.list.replaceChildren(...items)
    const unread = this.convs.reduce((n, c) => n + c.unreadCount(), 0)
    document.title = unread > 0 ? `(${unread}) Petrel` : 'Petrel'
    if (focused) this.list.querySelector<HTMLElement>(`[data-conv="${CSS.escape(focused)}"]`)?.focus()
  }

  private renderConversation(): void {
    const conv = this.current
    this.shell.dataset.view = conv ? 'conversation' : 'list'
    this.emptyPane.hidden = conv !== undefined
    this.convPane.hidden = conv === undefined
    if (!conv) return
    const refused = conv.refusal
    this.addPersonButton.hidden = !conv.isAdmin() || refused !== undefined
    this.invitePill.hidden = !conv.isAdmin() || refused !== undefined
    this.refusalNote.hidden = refused === undefined
    this.refusalNote.textContent = refused ? refusalText(refused) : ''
    this.input.disabled = refused !== undefined
    this.sendButton.disabled = refused !== undefined
    this.input.placeholder = refused ? 'You can no longer write here' : 'Message'
    this.headAvatar.replaceChildren(avatar(titleOf(conv), conv.id))
    this.headTitleButton.textContent = titleOf(conv)
    const typing = conv.typing()
    this.headSub.textContent = typing.length
      ? `${typing.join(', ')} ${typing.length === 1 ? 'is' : 'are'} typing…`
      : 'End-to-end encrypted'
    this.headSub.classList.toggle('is-typing', typing.length > 0)
    this.renderMessages(conv)
  }

  /** Keyed update of the message list: only rows whose content or status changed are rebuilt. */
  private renderMessages(conv: Conversation): void {
    const box = this.messagesBox
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80
    const wanted: HTMLElement[] = []
    const seen = new Set<string>()
    const row = (key: string, sig: string, make: () => HTMLElement) => {
      seen.add(key)
      const have = this.rows.get(key)
      if (have?.sig === sig) return wanted.push(have.node)
      const node = make()
      have?.node.replaceWith(node)
      this.rows.set(key, { node, sig })
      wanted.push(node)
    }
    const messages = conv.messages()
    // Refused for good (removed, this device unlinked), an admin's invite could not work either.
    const inviter = conv.isAdmin() && conv.refusal === undefined
    if (messages.length === 0) {
      row(`empty:${inviter}`, '', () =>
        el(
          'div',
          { class: 'conv-empty' },
          el('p', {}, inviter ? 'No messages yet. Invite someone, or just start writing: messages are kept on this device until they can be sent.' : 'No messages yet.'),
          ...(inviter ? [el('button', { type: 'button', class: 'pill', onclick: () => void this.showInvite() }, icon('link'), 'Invite people')] : []),
        ),
      )
    }
    let day = ''
    let author = ''
    for (const m of messages) {
      const d = dayKey(m.sentAt)
      if (d !== day) {
        const label = dayLabel(m.sentAt)
        // Keyed by the message it stands before: keyed by the date alone, a date that came back
        // (clocks that disagree, around midnight) took the one separator away from its place.
        row(`day:${d}:${m.id}`, label, () => el('div', { class: 'day', role: 'separator' }, el('span', {}, label)))
        day = d
        author = ''
      }
      const first = m.author !== author
      author = m.author
      row(m.id, `${m.status}|${m.text}|${m.error ?? ''}|${m.authorName ?? ''}|${first}`, () => this.messageRow(conv, m, first))
    }
    for (const [key, { node }] of this.rows) {
      if (seen.has(key)) continue
      node.remove()
      this.rows.delete(key)
    }
    let cursor = box.firstChild
    for (const node of wanted) {
      if (node === cursor) cursor = cursor.nextSibling
      else box.insertBefore(node, cursor)
    }
    const lastNode = messages.length > 0 ? wanted[wanted.length - 1] : undefined
    if (lastNode !== this.observed) {
      if (this.observed) this.observer.unobserve(this.observed)
      this.observed = lastNode
      this.lastVisible = false
      if (lastNode) this.observer.observe(lastNode)
    }
    if (atBottom || this.stickToBottom) box.scrollTop = box.scrollHeight
    this.stickToBottom = false
  }

  private messageRow(conv: Conversation, m: Message, first: boolean): HTMLElement {
    const time = el('time', { datetime: new Date(m.sentAt).toISOString(), title: fullTime(m.sentAt) }, clock(m.sentAt))
    const bubble = el(
      'div',
      { class: 'bubble' },
      !m.mine && first ? el('span', { class: 'author', style: `--hue:${hue(m.author)}` }, m.authorName || shortId(m.author)) : null,
      // Who wrote it, for screen readers, on every row: the name shows on a run's first only.
      !m.mine && !first ? el('span', { class: 'sr-only' }, `${m.authorName || shortId(m.author)}: `) : null,
      m.mine ? el('span', { class: 'sr-only' }, 'You: ') : null,
      el('span', { class: 'text' }, m.text),
      el('span', { class: 'meta' }, time, m.mine ? tick(m.status, m.error) : null),
    )
    const node = el('div', { class: `msg ${m.mine ? 'mine' : 'theirs'}${first ? ' first' : ''}`, 'data-id': m.id, 'data-status': m.status }, bubble)
    if (m.mine) {
      bubble.prepend(
        el('button', { type: 'button', class: 'info-btn', 'aria-label': 'Message info', title: 'Message info', onclick: () => this.showInfo(conv, m.id) }, icon('info')),
      )
    }
    if (m.status === 'failed') {
      const act = (fn: () => Promise<void>) => () => void fn().catch((err) => this.toast(errorText(err)))
      node.append(
        el(
          'div',
          { class: 'failed' },
          el('span', {}, `Not sent${m.error ? `: ${m.error}` : ''}`),
          el('button', { type: 'button', class: 'link', onclick: act(() => conv.retry(m.id)) }, 'Retry'),
          el('button', { type: 'button', class: 'link', onclick: act(() => conv.discard(m.id)) }, 'Discard'),
        ),
      )
    }
    return node
  }

  private renderInfo(): void {
    if (!this.info || !this.infoDialog.open) return
    const { conv, id } = this.info
    const m = conv.message(id)
    if (!m) return this.infoDialog.close()
    // Members' names as the conversation knows them: from messages alone, someone who had not
    // written yet showed as an id.
    const names = new Map<string, string>()
    for (const x of conv.messages()) if (x.authorName) names.set(x.author, x.authorName)
    for (const member of conv.members()) if (member.name) names.set(member.userId, member.name)
    const receipts = conv.receipts(id)
    const line = (status: 'read' | 'delivered', at: number | undefined) =>
      el('span', { class: 'receipt-line' }, tick(status), at ? `${status === 'read' ? 'Read' : 'Delivered'}: ${fullTime(at)}` : status === 'read' ? 'Not read yet' : 'Not delivered yet')
    this.infoBody.replaceChildren(
      el('blockquote', { class: 'bubble quoted' }, el('span', { class: 'text' }, m.text), el('span', { class: 'meta' }, clock(m.sentAt), tick(m.status, m.error))),
      receipts.length > 0
        ? el(
            'ul',
            { class: 'receipts' },
            ...receipts.map((r) => {
              const name = names.get(r.member) ?? shortId(r.member)
              return el('li', {}, avatar(name, r.member), el('div', {}, el('strong', {}, name), line('read', r.readAt), line('delivered', r.deliveredAt)))
            }),
          )
        : el(
            'p',
            { class: 'muted' },
            m.status === 'pending'
              ? 'Still on this device: it leaves when a connection exists.'
              : m.status === 'failed'
                ? 'This message was not sent.'
                : conv.members().length > 1
                  ? 'Sent before anyone else joined: ticks count the people who were here when it was sent, so it stays at ✓. Those who joined later can read it.'
                  : 'No one else is in this conversation yet.',
          ),
    )
  }

  // ------------------------------------------------------------------ dialogs and toasts

  private showNewDialog(): void {
    this.newDialog.showModal()
    this.newDialog.querySelector('input')?.focus()
  }

  private async showInvite(): Promise<void> {
    const conv = this.current
    if (!conv) return
    this.inviteLink.value = ''
    this.inviteLink.placeholder = 'Creating an invite…'
    this.inviteHint.textContent = ''
    this.inviteDialog.showModal()
    try {
      // The link shared before, while it works: made anew each time, "Stop this link" stopped
      // only the newest, and a link that leaked could not be stopped.
      // Not once someone who was a member when it was made has left or been removed: a link
      // older than their leave can never let them back (the relay's rule), and the person
      // asking again was handed exactly that link.
      const kept = this.keptLinks()[conv.id]
      const members = conv.members().map((m) => m.userId)
      const now = new Set(members)
      const reused = kept !== undefined && kept.expiresAt > Date.now() + 60_000 && (kept.members ?? []).every((id) => now.has(id))
      const token = reused ? kept.token : await conv.invite({ expiresIn: INVITE_LIFETIME_MS })
      if (!reused) this.keepLink(conv.id, { token, expiresAt: Date.now() + INVITE_LIFETIME_MS, members })
      this.invite = { conv, token }
      this.inviteLink.value = `${location.origin}/#invite=${token}`
      this.inviteLink.select()
      if (this.client.connection !== 'online') this.inviteHint.textContent = 'You are offline: the invite starts working once this device has reached the relay.'
    } catch (err) {
      this.inviteLink.placeholder = ''
      this.inviteHint.textContent = `No invite: ${errorText(err)}`
    }
  }

  /** The invite link made for each conversation on this device, until stopped or expired (localStorage). */
  private keptLinks(): Record<string, KeptLink> {
    try {
      const parsed: unknown = JSON.parse(localStorage.getItem(`petrel-links:${this.profile.storageKey}`) ?? '{}')
      return parsed && typeof parsed === 'object' ? (parsed as Record<string, KeptLink>) : {}
    } catch {
      return {}
    }
  }

  private keepLink(convId: string, link: KeptLink | undefined): void {
    const links = this.keptLinks()
    if (link) links[convId] = link
    else delete links[convId]
    try {
      localStorage.setItem(`petrel-links:${this.profile.storageKey}`, JSON.stringify(links))
    } catch {
      // Storage full or off: the link is made anew next time, as before.
    }
  }

  /** The invite the dialog shows stops working (joins made with it stay). */
  private async stopInvite(): Promise<void> {
    const shown = this.invite
    if (!shown) return
    try {
      await shown.conv.revokeInvite(shown.token)
      this.keepLink(shown.conv.id, undefined)
      this.invite = undefined
      this.inviteLink.value = ''
      this.inviteLink.placeholder = 'Link stopped'
      this.inviteHint.textContent = 'This link no longer lets anyone join.'
    } catch (err) {
      this.inviteHint.textContent = `Could not stop the link: ${errorText(err)}`
    }
  }

  /** Resolves true once the person chose to join the conversation a link invites them to. */
  private askToJoin(): Promise<boolean> {
    return new Promise((resolve) => {
      const answer = (join: boolean) => {
        this.joinDialog.close()
        resolve(join)
      }
      this.joinDialog.replaceChildren(
        el('h2', {}, 'Join a conversation?'),
        el('p', {}, `A link invites you to a conversation. If you join, its members see your name, “${this.profile.name}”, and can write to you.`),
        el(
          'div',
          { class: 'actions' },
          el('button', { type: 'button', class: 'ghost', onclick: () => answer(false) }, 'Not now'),
          el('button', { type: 'button', class: 'primary', onclick: () => answer(true) }, 'Join'),
        ),
      )
      // Escape closes the dialog: that is a no.
      this.joinDialog.addEventListener('cancel', () => resolve(false), { once: true })
      this.joinDialog.showModal()
    })
  }

  /** Any member may rename a conversation, for everyone in it. */
  private showRename(conv: Conversation): void {
    this.renaming = conv
    this.renameInput.value = conv.title
    this.renameDialog.showModal()
    this.renameInput.select()
  }

  private showInfo(conv: Conversation, id: string): void {
    this.info = { conv, id }
    this.infoDialog.showModal()
    this.renderInfo()
  }

  private toast(text: string, ms = 4_000): void {
    this.toastBox.textContent = text
    this.toastBox.hidden = false
    clearTimeout(this.toastTimer)
    this.toastTimer = setTimeout(() => {
      this.toastBox.hidden = true
    }, ms)
  }
}

void boot().catch((err) => {
  root.replaceChildren(el('div', { class: 'fatal', role: 'alert' }, el('h1', {}, 'Petrel could not start'), el('p', {}, errorText(err))))
})
