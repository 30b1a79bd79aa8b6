/**
 * One engine per device storage. Two tabs of one browser profile share IndexedDB: two engines
 * on it would each hold a socket, seal the same outbox twice and race on the cursor. The tab
 * holding the Web Lock `petrel:<storageKey>` owns storage and socket; another tab either fails
 * fast (`'fail'`, the default: the app shows "open in another tab"), waits for the lock
 * (`'wait'`), or asks the owner over a BroadcastChannel to close and then takes the lock
 * (`'take-over'`, WhatsApp Web's "Use here").
 *
 * Without Web Locks (Node, old browsers) there is nothing to coordinate: a SQLite file
 * belongs to one process by deployment.
 */
import { ErrorCode, PetrelError } from '../shared/errors.js'

export type TabPolicy = 'fail' | 'wait' | 'take-over'

export interface DeviceLock {
  release(): void
}

interface LockManagerLike {
  request(name: string, options: { ifAvailable?: boolean }, callback: (lock: unknown) => Promise<void> | void): Promise<unknown>
}

const TAKE_OVER = 'petrel/v1/take-over'

/**
 * Acquire the lock for `storageKey`, or undefined where the platform has no Web Locks.
 * `onDisplaced` runs when another tab asks to take over; the owner must close its client,
 * which releases the lock.
 */
export async function acquireDeviceLock(storageKey: string, policy: TabPolicy, onDisplaced: () => void): Promise<DeviceLock | undefined> {
  const locks = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator?.locks
  if (!locks) return undefined
  const name = `petrel:${storageKey}`
  const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel(name) : undefined
  if (policy === 'take-over') channel?.postMessage(TAKE_OVER)
  let release!: () => void
  const held = new Promise<void>((resolve) => {
    release = resolve
  })
  const granted = await new Promise<boolean>((resolve, reject) => {
    locks
      .request(name, policy === 'fail' ? { ifAvailable: true } : {}, (lock) => {
        resolve(lock !== null)
        // The lock is held until this promise settles: until release().
        return lock === null ? undefined : held
      })
      .catch(reject)
  })
  if (!granted) {
    channel?.close()
    throw new PetrelError(ErrorCode.DeviceInUse, 'Petrel is open on this device in another tab; close it there, or create the client with `tabs: "take-over"`')
  }
  if (channel) {
    channel.onmessage = (event: MessageEvent) => {
      if (event.data === TAKE_OVER) onDisplaced()
    }
  }
  return {
    release: () => {
      channel?.close()
      release()
    },
  }
}
