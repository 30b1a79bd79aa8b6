import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { type Profile, RestatedContext, restatedKey } from '../../src/client/restated-context.js'

const alice = 'A'.repeat(43)
const bob = 'B'.repeat(43)

/** A document and its reader, at key epoch `at.epoch` (changed by the spec as a fold would). */
function world(epoch = 20) {
  const doc = new Y.Doc()
  const profiles = doc.getMap<Profile>('profiles')
  const meta = doc.getMap<unknown>('meta')
  const at = { epoch }
  const ctx = new RestatedContext(
    () => profiles,
    () => meta,
    () => at.epoch,
  )
  profiles.observe(() => ctx.profilesChanged())
  return { doc, profiles, meta, ctx, at }
}

describe('restated context (title and names said again for newcomers)', () => {
  it('reads the entry of the highest epoch, the plain one counting as below every epoch', () => {
    const { profiles, meta, ctx } = world()
    profiles.set(alice, { name: 'Alice' })
    meta.set('title', 'Trip')
    expect(ctx.name(alice)).toBe('Alice')
    expect(ctx.title()).toBe('Trip')
    profiles.set(restatedKey(alice, 10), { name: 'Alice ten' })
    profiles.set(restatedKey(alice, 9), { name: 'Alice nine' })
    meta.set('title@2', 'Trip two')
    expect(ctx.name(alice)).toBe('Alice ten')
    expect(ctx.title()).toBe('Trip two')
    // A newcomer holds only what was said again.
    const late = world()
    late.profiles.set(restatedKey(bob, 3), { name: 'Bob' })
    late.meta.set('title@3', 'Trip')
    expect(late.ctx.name(bob)).toBe('Bob')
    expect(late.ctx.title()).toBe('Trip')
    expect(late.ctx.name(alice)).toBeUndefined()
  })

  it('ignores entries whose epoch part is not a plain decimal, and values that are not names', () => {
    const { profiles, meta, ctx } = world()
    profiles.set(alice, { name: 'Alice' })
    for (const bad of ['', 'x', '01', '-1', '1e3', '1.5', ' 2', '9999999999999999'])
      profiles.set(`${alice}@${bad}`, { name: `bad ${bad}` })
    profiles.set(bob, 'not a profile' as never)
    meta.set('title', 'Trip')
    meta.set('title@x', 'bad')
    meta.set('titles@9', 'other key')
    meta.set('title@8', 42)
    expect(ctx.name(alice)).toBe('Alice')
    expect(ctx.name(bob)).toBeUndefined()
    expect(ctx.title()).toBe('Trip')
  })

  it('says the name and the title again once an epoch, and says nothing it does not know', () => {
    const { profiles, meta, ctx } = world()
    expect(ctx.restatement(alice, 1)).toBeUndefined()
    profiles.set(alice, { name: 'Alice' })
    meta.set('title', 'Trip')
    ctx.restatement(alice, 1)!(profiles, meta)
    expect(profiles.get(`${alice}@1`)).toEqual({ name: 'Alice' })
    expect(meta.get('title@1')).toBe('Trip')
    expect(ctx.restatement(alice, 1)).toBeUndefined()
    // Bob's device comes to it after Alice's: only his name is left to say.
    profiles.set(bob, { name: 'Bob' })
    ctx.restatement(bob, 1)!(profiles, meta)
    expect([...meta.keys()].sort()).toEqual(['title', 'title@1'])
    expect(profiles.get(`${bob}@1`)).toEqual({ name: 'Bob' })
  })

  it('renames in the plain entry, or only in the current epoch once the name was said again', () => {
    const { profiles, meta, ctx, at } = world(4)
    ctx.naming(alice, 'Alice')(profiles)
    ctx.titling('Trip')(meta)
    expect([...profiles.keys()]).toEqual([alice])
    expect([...meta.keys()]).toEqual(['title'])
    profiles.set(`${alice}@4`, { name: 'Alice' })
    meta.set('title@4', 'Trip')
    at.epoch = 6
    ctx.naming(alice, 'Alicia')(profiles)
    ctx.titling('Lisbon')(meta)
    expect(ctx.name(alice)).toBe('Alicia')
    expect(ctx.title()).toBe('Lisbon')
    // The plain entries stay as they were: written beside the new one, they drew it into a
    // newcomer's fill.
    expect(profiles.get(alice)).toEqual({ name: 'Alice' })
    expect(meta.get('title')).toBe('Trip')
    expect([...profiles.keys()].sort()).toEqual([alice, `${alice}@4`, `${alice}@6`].sort())
  })

  it('ignores entries of an epoch after the current one: nobody pins a name or the title for good', () => {
    const { profiles, meta, ctx, at } = world(3)
    profiles.set(alice, { name: 'Alice' })
    meta.set('title', 'Trip')
    meta.set('title@999999999999999', 'PINNED')
    profiles.set(`${alice}@999999999999999`, { name: 'pinned' })
    expect(ctx.title()).toBe('Trip')
    expect(ctx.name(alice)).toBe('Alice')
    ctx.titling('Lisbon')(meta)
    expect(ctx.title()).toBe('Lisbon')
    // Epochs this device has not folded yet count once it has.
    meta.set('title@5', 'Porto')
    expect(ctx.title()).toBe('Lisbon')
    at.epoch = 5
    expect(ctx.title()).toBe('Porto')
    expect(ctx.restatement(alice, 9)).toBeUndefined()
  })
})
