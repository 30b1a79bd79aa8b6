/**
 * A Yjs (V1) update applied as `Y.applyUpdate` applies it, its strings read by var-string.ts's
 * readers in place of lib0's.
 *
 * Every message a device shows was decoded from an update: a message is eight to ten strings
 * (its id, text, device and the keys of its fields), and lib0 reads each through a view and a
 * `TextDecoder` call. Applying updates is most of the history replica's thread, and part of every
 * receive, catch-up and open. `applyUpdateV2` takes the decoder class as a parameter, and
 * `UpdateDecoderV1` is Yjs's public class: the subclass below changes only how `readString`,
 * `readKey` and `readAny` read, not what they return (unit-tested against Yjs's own reading,
 * `test/unit/update-reader.test.ts`).
 *
 * Like the state encoder, {@link updateApplierFor} closes over nothing but its arguments: the
 * replica thread runs its source text against the CommonJS Yjs it loads.
 */
import * as Y from 'yjs'
import { type Lib0StringReaders, readAny, readVarString } from './var-string.js'

/** What the applier uses of Yjs. */
export interface YjsApplyApi {
  UpdateDecoderV1: typeof Y.UpdateDecoderV1
  applyUpdateV2(doc: Y.Doc, update: Uint8Array, origin?: unknown, decoder?: typeof Y.UpdateDecoderV1): void
}

/**
 * `applyUpdate` for one copy of Yjs and the readers for its copy of lib0.
 *
 * @example
 * ```ts
 * const apply = updateApplierFor(Y, lib0StringReaders(decoding))
 * apply(doc, update, 'remote') // as Y.applyUpdate(doc, update, 'remote')
 * ```
 */
export function updateApplierFor(Yjs: YjsApplyApi, readers: Lib0StringReaders): (doc: Y.Doc, update: Uint8Array, origin?: unknown) => void {
  class DirectStringsDecoderV1 extends Yjs.UpdateDecoderV1 {
    override readString(): string {
      return readers.readVarString(this.restDecoder)
    }
    override readKey(): string {
      return readers.readVarString(this.restDecoder)
    }
    override readAny(): unknown {
      return readers.readAny(this.restDecoder)
    }
  }
  return (doc, update, origin) => Yjs.applyUpdateV2(doc, update, origin, DirectStringsDecoderV1)
}

/**
 * `Y.applyUpdate(doc, update, origin)`, its strings read faster.
 *
 * @example
 * ```ts
 * applyUpdate(doc, row.bytes, ORIGIN_LOAD)
 * ```
 */
export const applyUpdate: (doc: Y.Doc, update: Uint8Array, origin?: unknown) => void = updateApplierFor(Y, { readVarString, readAny })
