import { describe, expect, it } from 'vitest'
import { friendlyError, isolate, refusalText } from '../../examples/chat/src/view.js'
import { ErrorCode, PetrelError } from '../../src/shared/errors.js'

describe("the demo app's words for engine errors", () => {
  it('tells a damaged or cut link from one that was stopped, expired or used up', () => {
    for (const message of ['not a Petrel invite', 'invite is damaged']) {
      expect(friendlyError(new PetrelError(ErrorCode.InviteInvalid, message))).toMatch(/incomplete or damaged\. Copy the whole link again/)
    }
    for (const message of ['invite has expired', 'relay refused the conversation: join refused: invite revoked']) {
      expect(friendlyError(new PetrelError(ErrorCode.InviteInvalid, message))).toMatch(/stopped, has expired or was used up/)
    }
  })

  it('says a message over the limit in KB, and that it is kept', () => {
    const text = friendlyError(new PetrelError(ErrorCode.TooLarge, 'message is 100000 bytes; the limit is 65536'))
    expect(text).toBe('This message is too long: 98 KB, and at most 64 KB go in one message. Shorten it or send it in parts; it is still in the box.')
  })

  it('says a conversation refused for a stopped invite in the person’s words, not the relay’s', () => {
    expect(refusalText({ message: 'relay refused the conversation: join refused: invite revoked' })).toBe(
      'The invite link you joined with was stopped, has expired or was used up. Ask for a new one.',
    )
    expect(refusalText({ message: 'you left this conversation' })).toBe('You left this conversation.')
  })

  it('sets other people’s text apart, so a right-to-left override in a name cannot turn the words after it', () => {
    const name = 'Mallory\u202e'
    const line = `${isolate(name)}: ${isolate('I did it')}`
    // The override stays inside its isolate: the colon and the message come after the pop.
    expect(line).toBe('\u2068Mallory\u202e\u2069: \u2068I did it\u2069')
  })
})
