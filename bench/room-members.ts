/**
 * A conversation with many member devices on raw connections: a real client creates it and an
 * invite, then goes away (joining works with every admin offline); the devices join with the
 * invite, as real joiners do.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createClient } from '../src/client/index.js'
import { PetrelDevice, type RoomHandlers } from './petrel-device.js'

export async function roomWithMembers(url: string, count: number, handlers: (i: number) => RoomHandlers): Promise<{ room: string; devices: PetrelDevice[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-bench-admin-'))
  try {
    const admin = await createClient({ relay: url, name: 'admin', storage: join(dir, 'admin.db') })
    const conv = await admin.createConversation({ title: 'bench' })
    await conv.whenSynced(30_000)
    const token = await conv.invite({ uses: count + 1 })
    await admin.close()
    const devices: PetrelDevice[] = []
    let room = ''
    // A few joins at a time: each one is a signed record every member then receives.
    for (let i = 0; i < count; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, count - i) }, async (_, k) => {
          const d = await PetrelDevice.connect(url)
          room = await d.join(token, handlers(i + k))
          return d
        }),
      )
      devices.push(...batch)
    }
    return { room, devices }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
