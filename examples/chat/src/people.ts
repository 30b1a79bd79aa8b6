/**
 * The sheets about people and devices: this person's devices (link a new one, remove one),
 * "My identity" to hand to an admin, and "Add person" for the admins of a conversation.
 */
import type { Conversation, PetrelClient } from '../../../src/client/index.js'
import { closeOnBackdrop, copyButton, el, errorText, fullTime, icon } from './view.js'

type DeviceInfo = ReturnType<PetrelClient['devices']>[number]

/** How long a device link works (the engine's default). */
const LINK_VALID_MS = 10 * 60_000

const shortDevice = (id: string): string => `${id.slice(0, 8)}…`

/** This person's devices: link a new one (from the first device only), remove another. */
export class DevicesSheet {
  readonly dialog = el('dialog', { class: 'sheet', 'aria-label': 'Devices' })
  private readonly list = el('ul', { class: 'device-list', 'aria-label': 'Your devices' })
  private readonly note = el('p', { class: 'muted small' })
  private readonly linkBox = el('div', { class: 'link-box', hidden: true })
  private readonly linkField = el('input', { class: 'invite-link', readonly: true, 'aria-label': 'Device link' })
  private readonly hint = el('p', { class: 'muted small', role: 'status' })
  private readonly linkButton = el('button', { type: 'button', class: 'primary' }, 'Link a new device')
  /** The link on offer: one at a time, shown again while it still works. */
  private pending: { payload: string; expiresAt: number } | undefined
  private expiry: ReturnType<typeof setTimeout> | undefined
  /** The device whose Remove asks for confirmation. */
  private confirming: string | undefined
  private busy = false
  private drawn = ''

  constructor(
    private readonly client: PetrelClient,
    private readonly toast: (text: string) => void,
  ) {
    this.linkButton.addEventListener('click', () => void this.link())
    this.linkBox.append(
      el('p', {}, 'On the new device, open Petrel, choose “Link to an existing device” and paste this link. It works once, for 10 minutes; keep it to yourself.'),
      el('div', { class: 'copy-row' }, this.linkField, copyButton(this.linkField, this.hint, 'Copy', 'pill')),
    )
    this.dialog.append(
      el('h2', {}, 'Your devices'),
      el('p', { class: 'muted small' }, 'Each linked device gets all your conversations with their history and keeps them in step, end-to-end encrypted.'),
      this.list,
      this.note,
      this.linkBox,
      this.hint,
      el('div', { class: 'actions' }, el('button', { type: 'button', class: 'ghost', onclick: () => this.dialog.close() }, 'Done'), this.linkButton),
    )
    closeOnBackdrop(this.dialog)
    this.dialog.addEventListener('close', () => {
      this.confirming = undefined
    })
    client.on('deviceLinked', () => {
      this.pending = undefined
      clearTimeout(this.expiry)
      if (this.dialog.open) this.hint.textContent = 'New device linked: your conversations are on their way to it.'
      else this.toast('New device linked: your conversations are on their way to it.')
      this.render()
    })
  }

  show(): void {
    this.hint.textContent = this.pending ? 'Waiting for the new device…' : ''
    this.drawn = ''
    this.dialog.showModal()
    this.render()
  }

  /** Draw while open; the list changes as devices are linked here or seen in conversations. */
  render(): void {
    if (!this.dialog.open) return
    if (this.pending && Date.now() > this.pending.expiresAt) {
      this.pending = undefined
      this.hint.textContent = 'That link expired: make a new one.'
    }
    const devices = this.client.devices().sort((a, b) => Number(b.current) - Number(a.current) || a.createdAt - b.createdAt)
    const canLink = devices.find((d) => d.current)?.primary === true
    this.linkBox.hidden = this.pending === undefined
    const payload = this.pending?.payload ?? ''
    if (this.linkField.value !== payload) this.linkField.value = payload
    this.linkButton.hidden = this.pending !== undefined
    this.linkButton.disabled = !canLink || this.busy
    this.note.textContent = canLink ? '' : 'New devices are linked from your first device, the one that holds your identity key.'
    const sig = JSON.stringify([devices, this.confirming, this.busy])
    if (sig === this.drawn) return
    this.drawn = sig
    this.list.replaceChildren(...devices.map((d) => this.row(d)))
  }

  private row(d: DeviceInfo): HTMLLIElement {
    const label = d.current ? 'This device' : d.primary ? 'First device' : 'Other device'
    const detail = `${shortDevice(d.id)} · ${d.current && d.primary ? 'first device · ' : ''}added ${fullTime(d.createdAt)}`
    const actions = d.current
      ? null
      : this.confirming === d.id
        ? el(
            'span',
            { class: 'device-actions' },
            el('button', { type: 'button', class: 'link', disabled: this.busy, onclick: () => this.confirm(undefined) }, 'Keep'),
            el('button', { type: 'button', class: 'link danger', disabled: this.busy, onclick: () => void this.remove(d.id) }, 'Remove for good'),
          )
        : el('button', { type: 'button', class: 'link danger', disabled: this.busy, 'aria-label': `Remove ${label.toLowerCase()} ${shortDevice(d.id)}`, onclick: () => this.confirm(d.id) }, 'Remove')
    return el(
      'li',
      { 'data-device': d.id, 'aria-current': d.current ? 'true' : undefined },
      icon('devices', 'icon device-icon'),
      el('div', { class: 'device-text' }, el('strong', {}, label), el('span', { class: 'muted small' }, detail)),
      actions,
    )
  }

  private confirm(id: string | undefined): void {
    this.confirming = id
    this.hint.textContent = id ? 'Removed devices leave every conversation and can read nothing sent after.' : ''
    this.render()
  }

  private async link(): Promise<void> {
    this.busy = true
    this.hint.textContent = ''
    this.render()
    try {
      const payload = await this.client.linkDevice()
      this.pending = { payload, expiresAt: Date.now() + LINK_VALID_MS }
      clearTimeout(this.expiry)
      this.expiry = setTimeout(() => this.render(), LINK_VALID_MS + 1_000)
      this.hint.textContent = 'Waiting for the new device…'
    } catch (err) {
      this.hint.textContent = `Cannot link a device: ${errorText(err)}`
    } finally {
      this.busy = false
      this.render()
    }
    if (this.pending) this.linkField.select()
  }

  private async remove(id: string): Promise<void> {
    this.busy = true
    this.render()
    try {
      await this.client.removeDevice(id)
      this.hint.textContent = 'Device removed.'
    } catch (err) {
      this.hint.textContent = `Not removed: ${errorText(err)}`
    } finally {
      this.busy = false
      this.confirming = undefined
      this.render()
    }
  }
}

/** "My identity": public keys only, for an admin's "Add person". */
export class IdentitySheet {
  readonly dialog = el('dialog', { class: 'sheet', 'aria-label': 'My identity' })
  private readonly field = el('textarea', { class: 'invite-link identity', readonly: true, rows: 4, spellcheck: 'false', 'aria-label': 'My identity' })
  private readonly hint = el('p', { class: 'muted small', role: 'status' })

  constructor(private readonly client: PetrelClient) {
    this.dialog.append(
      el('h2', {}, 'My identity'),
      el('p', {}, 'Give this to an admin of a conversation: with “Add person” they add you, on all your devices, without an invite. It holds only public keys.'),
      this.field,
      this.hint,
      el('div', { class: 'actions' }, el('button', { type: 'button', class: 'ghost', onclick: () => this.dialog.close() }, 'Done'), copyButton(this.field, this.hint)),
    )
    closeOnBackdrop(this.dialog)
  }

  async show(): Promise<void> {
    this.field.value = ''
    this.hint.textContent = ''
    this.dialog.showModal()
    try {
      this.field.value = await this.client.publicIdentity()
      this.field.select()
    } catch (err) {
      this.hint.textContent = `No identity: ${errorText(err)}`
    }
  }
}

/** "Add person" (admins): paste someone's identity; they get the conversation on every device. */
export class AddPersonSheet {
  readonly dialog = el('dialog', { class: 'sheet', 'aria-label': 'Add person' })
  private readonly field = el('textarea', { class: 'invite-link identity', required: true, rows: 4, spellcheck: 'false', placeholder: 'petrel-id:…', 'aria-label': 'Their identity' })
  private readonly history = el('input', { type: 'checkbox', checked: true })
  private readonly error = el('p', { class: 'form-error', role: 'alert' })
  private readonly submit = el('button', { type: 'submit', class: 'primary' }, 'Add')
  private conv: Conversation | undefined

  constructor(private readonly toast: (text: string) => void) {
    this.dialog.append(
      el(
        'form',
        {
          onsubmit: (e) => {
            e.preventDefault()
            void this.add()
          },
        },
        el('h2', {}, 'Add person'),
        el('p', {}, 'Paste the identity they copied from “My identity”. They need no invite: the conversation appears on their devices when they are online.'),
        this.field,
        el('label', { class: 'check' }, this.history, 'They can read earlier messages'),
        this.error,
        el('div', { class: 'actions' }, el('button', { type: 'button', class: 'ghost', onclick: () => this.dialog.close() }, 'Cancel'), this.submit),
      ),
    )
    closeOnBackdrop(this.dialog)
  }

  show(conv: Conversation): void {
    this.conv = conv
    this.field.value = ''
    this.history.checked = true
    this.error.textContent = ''
    this.submit.disabled = false
    this.dialog.showModal()
    this.field.focus()
  }

  private async add(): Promise<void> {
    const conv = this.conv
    const identity = this.field.value.trim()
    if (!conv || !identity) return
    this.submit.disabled = true
    this.error.textContent = ''
    try {
      await conv.addMember(identity, { history: this.history.checked ? 'full' : 'from-join' })
      this.dialog.close()
      this.toast(`Added to “${conv.title || 'Untitled conversation'}”`)
    } catch (err) {
      this.error.textContent = errorText(err)
    } finally {
      this.submit.disabled = false
    }
  }
}
