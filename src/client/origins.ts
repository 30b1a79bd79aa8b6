/**
 * Transaction origins of a conversation's two documents: who made a change tells whether it is
 * to be sealed and sent (a local change), or was received or loaded and must not be.
 */

/** Rows read from local storage at an open. */
export const ORIGIN_LOAD = Symbol('load')
/** Envelopes received from the relay, opened and applied. */
export const ORIGIN_REMOTE = Symbol('remote')
/** This device's own writes to the outer log (envelopes, records), captured to be stored. */
export const ORIGIN_LOCAL_OUTER = Symbol('local-outer')
