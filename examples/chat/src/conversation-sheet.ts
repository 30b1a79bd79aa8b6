/**
 * "Conversation info", opened from the conversation's header: its members (an admin removes
 * one), renaming it, and leaving it. WhatsApp's group info, in short.
 */
import type { Conversation } from '../../../src/client/index.js'
import { avatar, closeOnBackdrop, el, errorText, shortId } from './view.js'

type Member = ReturnType<Conversation['members']>[number]

export class ConversationSheet {
  readonly dialog = el('dialog', { class: 'sheet', 'aria-label': 'Conversation info' })
  private readonly heading = el('h2', {})
  private readonly list = el('ul', { class: 'device-list member-list', 'aria-label': 'Members' })
  private readonly error = el('p', { class: 'form-error', role: 'alert' })
  private readonly renameButton = el('button', { type: 'button', class: 'ghost', 'aria-label': 'Rename conversation' }, 'Rename')
  private readonly leaveButton = el('button', { type: 'button', class: 'ghost danger', 'aria-label': 'Leave conversation' }, 'Leave')
  private conv: Conversation | undefined
  /** A member whose Remove asks for confirmation, or 'leave' when leaving does. */
  private confirming: string | undefined
  private busy = false
  private drawn = ''

  constructor(
    private readonly me: string,
    private readonly rename: (conv: Conversation) => void,
    private readonly toast: (text: string) => void,
  ) {
    this.renameButton.addEventListener('click', () => {
      const conv = this.conv
      if (!conv) return
      this.dialog.close()
      this.rename(conv)
    })
    this.leaveButton.addEventListener('click', () => this.confirm('leave'))
    this.dialog.append(
      this.heading,
      el('p', { class: 'muted small' }, 'Members'),
      this.list,
      this.error,
      el('div', { class: 'actions' }, this.leaveButton, this.renameButton, el('button', { type: 'button', class: 'ghost', onclick: () => this.dialog.close() }, 'Done')),
    )
    this.dialog.addEventListener('close', () => {
      this.conv = undefined
      this.confirming = undefined
    })
    closeOnBackdrop(this.dialog)
  }

  show(conv: Conversation): void {
    this.conv = conv
    this.confirming = undefined
    this.error.textContent = ''
    this.drawn = ''
    this.dialog.showModal()
    this.render()
  }

  /** Draw what changed (members come and go while it is open); a no-op when closed. */
  render(): void {
    const conv = this.conv
    if (!conv || !this.dialog.open) return
    const members = conv.members()
    const refused = conv.refusal !== undefined
    const admin = conv.isAdmin() && !refused
    const sig = JSON.stringify([conv.title, members, this.confirming, this.busy, admin, refused])
    if (sig === this.drawn) return
    this.drawn = sig
    this.heading.textContent = conv.title || 'Untitled conversation'
    this.renameButton.hidden = refused
    this.leaveButton.hidden = refused
    this.leaveButton.disabled = this.busy
    const confirmLeave = this.confirming === 'leave'
    this.leaveButton.textContent = confirmLeave ? 'Leave for good?' : 'Leave'
    this.leaveButton.setAttribute('aria-label', confirmLeave ? 'Leave for good?' : 'Leave conversation')
    const sorted = [...members].sort((a, b) => Number(b.userId === this.me) - Number(a.userId === this.me) || (a.name ?? '').localeCompare(b.name ?? ''))
    this.list.replaceChildren(...sorted.map((m) => this.row(m, admin)))
  }

  private row(m: Member, admin: boolean): HTMLElement {
    const mine = m.userId === this.me
    const name = mine ? 'You' : m.name || shortId(m.userId)
    const detail = [m.role === 'admin' ? 'admin' : 'member', `${m.devices.length} device${m.devices.length === 1 ? '' : 's'}`].join(' · ')
    const actions =
      !admin || mine
        ? null
        : this.confirming === m.userId
          ? el(
              'span',
              { class: 'device-actions' },
              el('button', { type: 'button', class: 'link', disabled: this.busy, onclick: () => this.confirm(undefined) }, 'Keep'),
              el('button', { type: 'button', class: 'link danger', disabled: this.busy, onclick: () => void this.remove(m) }, 'Remove for good'),
            )
          : el('button', { type: 'button', class: 'link danger', disabled: this.busy, 'aria-label': `Remove ${name}`, onclick: () => this.confirm(m.userId) }, 'Remove')
    return el('li', {}, avatar(m.name || m.userId, m.userId), el('div', { class: 'device-text' }, el('strong', {}, name), el('span', { class: 'muted small' }, detail)), actions)
  }

  private confirm(what: string | undefined): void {
    if (what === 'leave' && this.confirming === 'leave') return void this.leave()
    this.confirming = what
    this.render()
  }

  private async remove(m: Member): Promise<void> {
    const conv = this.conv
    if (!conv) return
    await this.act(async () => {
      await conv.removeMember(m.userId)
      this.toast(`${m.name || shortId(m.userId)} was removed: the key changed, and they read nothing sent from now on.`)
    })
  }

  private async leave(): Promise<void> {
    const conv = this.conv
    if (!conv) return
    await this.act(async () => {
      await conv.leave()
      this.dialog.close()
      this.toast(`You left “${conv.title || 'Untitled conversation'}”. What it held stays on this device.`)
    })
  }

  private async act(job: () => Promise<void>): Promise<void> {
    this.busy = true
    this.error.textContent = ''
    this.render()
    try {
      await job()
    } catch (err) {
      this.error.textContent = errorText(err)
    } finally {
      this.busy = false
      this.confirming = undefined
      this.render()
    }
  }
}
