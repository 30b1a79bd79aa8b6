/**
 * A conversation's summary: what a chat list and the first screen of a conversation show
 * (title, unread count, the last page of messages), stored beside the conversation so a
 * device starts without loading every conversation's documents. The documents load in the
 * background; until a conversation's have, it answers from its summary. Written by this
 * device from its own documents (local storage is trusted as much as the documents are).
 *
 * ```
 * sum:{id} := uint8 1 • varString title • varUint unread • varUint n • { message }{n}
 * message  := varString id • varString author • varString authorName • varString text
 *             • varUint sentAt • uint8 mine(0|1) • uint8 status • varString error
 * status   := 0 pending | 1 sent | 2 delivered | 3 read | 4 failed
 * stale:{id} := uint8 1     present while the documents changed after the summary was stored
 * ```
 * A conversation's first write after its summary was stored puts `stale:{id}` in the same
 * atomic batch; storing a summary deletes it. A start uses a summary only without the mark,
 * so what it shows is exactly what was stored, never older.
 */
import * as encoding from 'lib0/encoding'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { StrictReader } from '../shared/wire.js'
import type { Message } from './conversation.js'

export interface Summary {
  title: string
  unread: number
  messages: Message[]
}

/** Messages a summary keeps: a screenful and then some. */
export const SUMMARY_MESSAGES = 50

const STATUSES: Message['status'][] = ['pending', 'sent', 'delivered', 'read', 'failed']

/** Every conversation's summary and stale mark sit under one prefix each: a start reads each prefix once. */
export const SUMMARY_PREFIX = 'sum:'
export const STALE_SUMMARY_PREFIX = 'stale:'
export const summaryKey = (id: string) => `${SUMMARY_PREFIX}${id}`
export const staleSummaryKey = (id: string) => `${STALE_SUMMARY_PREFIX}${id}`
export const STALE = new Uint8Array([1])

export function encodeSummary(s: Summary): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  encoding.writeVarString(e, s.title)
  encoding.writeVarUint(e, s.unread)
  const page = s.messages.slice(-SUMMARY_MESSAGES)
  encoding.writeVarUint(e, page.length)
  for (const m of page) {
    encoding.writeVarString(e, m.id)
    encoding.writeVarString(e, m.author)
    encoding.writeVarString(e, m.authorName ?? '')
    encoding.writeVarString(e, m.text)
    encoding.writeVarUint(e, m.sentAt)
    encoding.writeUint8(e, m.mine ? 1 : 0)
    encoding.writeUint8(e, STATUSES.indexOf(m.status))
    encoding.writeVarString(e, m.error ?? '')
  }
  return encoding.toUint8Array(e)
}

export function decodeSummary(bytes: Uint8Array, conversationId: string): Summary {
  const r = new StrictReader(bytes)
  if (r.uint8() !== 1) throw new PetrelError(ErrorCode.VersionMismatch, 'stored conversation summary has an unknown format version')
  const title = r.varString(64 * 1024)
  const unread = r.varUint()
  const n = r.varUint(SUMMARY_MESSAGES)
  const messages: Message[] = []
  for (let i = 0; i < n; i++) {
    const id = r.varString(256)
    const author = r.varString(256)
    const authorName = r.varString(64 * 1024)
    const text = r.varString(1 << 20)
    const sentAt = r.varUint()
    const mine = r.uint8() === 1
    const status = STATUSES[r.uint8()] ?? 'sent'
    const error = r.varString(64 * 1024)
    const m: Message = { id, conversationId, author, text, sentAt, mine, status }
    if (authorName) m.authorName = authorName
    if (error) m.error = error
    messages.push(m)
  }
  r.end()
  return { title, unread, messages }
}
