/** Rows and batches for the relay store conformance suites. */
import type { AppendBatch, NewRow } from '../../src/relay/store/relay-store.js'

export const text = (s: string): Uint8Array => new TextEncoder().encode(s)

/** A row of `len` one-clock structs; its bytes name it, so a mix-up shows. */
export const row = (room: string, client: number, clock: number, len: number, structs: Uint8Array = text(`${client}@${clock}`)): NewRow => ({
  room,
  client,
  clock,
  len,
  count: len,
  structs,
})

export const batch = (parts: Partial<AppendBatch>): AppendBatch => ({ rows: [], bindings: [], records: [], ...parts })
