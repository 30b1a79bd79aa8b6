/**
 * The first-run screen: choose a display name for a new person, or link this browser to a
 * person who already uses Petrel on another device (Devices → "Link a new device" there gives
 * a device link to paste here). The profile is saved only once this device has an identity,
 * so a reload while linking starts over instead of leaving a half-linked profile behind.
 */
import { createClient, type PetrelClient } from '../../../src/client/index.js'
import { el, errorText, icon } from './view.js'

export interface Profile {
  name: string
  /** Namespaces this profile's IndexedDB database (`petrel:<storageKey>`). */
  storageKey: string
}

const PROFILE = 'petrel-chat:profile'

export function loadProfile(): Profile | undefined {
  try {
    const p = JSON.parse(localStorage.getItem(PROFILE) ?? 'null') as Partial<Profile> | null
    return p && typeof p.name === 'string' && typeof p.storageKey === 'string' ? { name: p.name, storageKey: p.storageKey } : undefined
  } catch {
    return undefined
  }
}

function saveProfile(profile: Profile): void {
  localStorage.setItem(PROFILE, JSON.stringify(profile))
}

/**
 * First visit: a new person (the name members will see; it travels encrypted), or a device
 * of an existing one. Linking opens the client here, because it waits for the other device.
 */
/**
 * @param invited the address holds an invite: the screen says that the name chosen here is the
 * one the conversation's members will see, and the app joins without asking again.
 */
export function firstRun(root: HTMLElement, relay: string, invited = false): Promise<{ profile: Profile; client?: PetrelClient }> {
  return new Promise((resolve) => {
    const id = [...crypto.getRandomValues(new Uint8Array(6))].map((b) => b.toString(16).padStart(2, '0')).join('')
    const storageKey = `profile-${id}`
    let linking = false
    let waiting = false

    const name = el('input', { name: 'name', required: true, maxlength: 40, autocomplete: 'nickname', placeholder: 'Your name', 'aria-label': 'Display name' })
    const nameLabel = el('span', {}, 'Choose a display name')
    const nameField = el('label', { class: 'field' }, nameLabel, name)
    const link = el('textarea', { name: 'link', rows: 3, spellcheck: 'false', autocomplete: 'off', placeholder: 'petrel-link:…', 'aria-label': 'Device link' })
    const linkField = el('label', { class: 'field', hidden: true }, el('span', {}, 'Device link from your other device'), link)
    const title = el('h1', {}, 'Welcome to Petrel')
    const intro = el('p', {})
    const status = el('p', { class: 'welcome-status', role: 'status' })
    const error = el('p', { class: 'form-error', role: 'alert' })
    const submit = el('button', { type: 'submit', class: 'primary' })
    const toggle = el('button', { type: 'button', class: 'ghost wide' })

    const setMode = (toLink: boolean) => {
      linking = toLink
      title.textContent = linking ? 'Link this device' : 'Welcome to Petrel'
      intro.textContent = linking
        ? 'On a device where you already use Petrel, open Devices, choose “Link a new device” and paste its link here. This device then gets all your conversations.'
        : invited
          ? 'You were invited to a conversation. Choose the name its members will see, and you join it. Messages are end-to-end encrypted and never lost: they are saved on this device first.'
          : 'End-to-end encrypted messages that are never lost: they are saved on this device first and leave it, sealed, when a connection exists.'
      nameLabel.textContent = 'Choose a display name'
      // A linked device takes the person's name from the link: asked here, it renamed them everywhere.
      nameField.hidden = linking
      name.required = !linking
      linkField.hidden = !linking
      link.required = linking
      submit.textContent = linking ? 'Link this device' : 'Continue'
      toggle.textContent = linking ? 'Back: I am new here' : 'Link to an existing device'
      error.textContent = ''
      const next = linking ? link : name
      next.focus()
    }

    const setWaiting = (on: boolean) => {
      waiting = on
      name.disabled = link.disabled = submit.disabled = on
      // The engine cannot be told to stop waiting: a reload drops the half-made link.
      toggle.textContent = on ? 'Cancel' : 'Back: I am new here'
      status.replaceChildren(...(on ? [el('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Waiting for your other device…'] : []))
    }

    const linkDevice = async (payload: string) => {
      error.textContent = ''
      setWaiting(true)
      try {
        const client = await createClient({ relay, storageKey, link: payload })
        const profile = { name: client.displayName ?? 'Me', storageKey }
        saveProfile(profile)
        resolve({ profile, client })
      } catch (err) {
        setWaiting(false)
        error.textContent = `Could not link: ${errorText(err)}`
        link.focus()
      }
    }

    const onSubmit = (event: Event) => {
      event.preventDefault()
      if (waiting) return
      if (!linking) {
        const profile = { name: name.value.trim(), storageKey }
        if (!profile.name) {
          // `required` takes spaces: say why Continue did nothing.
          name.setCustomValidity('Choose a name with at least one letter or sign.')
          name.reportValidity()
          name.addEventListener('input', () => name.setCustomValidity(''), { once: true })
          return
        }
        saveProfile(profile)
        return resolve({ profile })
      }
      const payload = link.value.trim()
      if (payload) void linkDevice(payload)
    }

    toggle.addEventListener('click', () => (waiting ? location.reload() : setMode(!linking)))
    root.replaceChildren(
      el(
        'main',
        { class: 'welcome' },
        el(
          'form',
          { class: 'welcome-card', onsubmit: onSubmit },
          icon('lock', 'welcome-logo'),
          title,
          intro,
          nameField,
          linkField,
          status,
          error,
          submit,
          toggle,
        ),
      ),
    )
    root.removeAttribute('aria-busy')
    setMode(false)
  })
}
