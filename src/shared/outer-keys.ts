/**
 * Names in the outer (ciphertext-only) document. Envelope keys are derived from the Yjs id
 * of the item that holds them, so a key can never be reused: the relay binds each client id
 * to one device and stores each client's clocks once, contiguously, so (client, clock) —
 * and with it the key — is unique for ever. A member therefore cannot shadow another
 * member's envelope by writing the same key.
 */
export const OUTER_LOG = 'log'
export const OUTER_RECORDS = 'rec'

export const envelopeKey = (client: number, clock: number): string => `${client.toString(36)}.${clock.toString(36)}`
