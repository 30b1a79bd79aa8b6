/**
 * A Petrel bot: joins a conversation from an invite and answers each message from the others,
 * once ("🤖 you said: …"), marking what it has read. It is an ordinary member: it holds the
 * conversation key, so the relay sees only sealed envelopes from it too.
 *
 *   node --import tsx examples/bot/bot.ts <relayUrl> <invite> [--db ./.petrel/bot.db] [--name "Echo bot"]
 *
 * Its device (identity, conversations, outbox) lives in SQLite at --db; which messages it has
 * answered lives next to it (`<db>.answered.json`), so a restart never answers twice. An invite
 * is a capability: anyone who reads it from a process list can join, so prefer a short-lived
 * one (`conv.invite({ expiresIn: 600_000 })`).
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { createClient, type Message } from '../../src/client/index.js'

const PREFIX = '🤖 you said: '

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    db: { type: 'string', default: './.petrel/bot.db' },
    name: { type: 'string', default: 'Echo bot' },
  },
})
const [relay, invite] = positionals
if (!relay || !invite) {
  process.stderr.write('usage: node --import tsx examples/bot/bot.ts <relayUrl> <invite> [--db ./.petrel/bot.db] [--name "Echo bot"]\n')
  process.exit(2)
}

/** Per conversation: ids of the messages answered (or found in the history when joining). */
interface State {
  answered: Record<string, string[]>
}
const statePath = `${values.db}.answered.json`
const state: State = existsSync(statePath) ? (JSON.parse(readFileSync(statePath, 'utf8')) as State) : { answered: {} }
const saveState = () => {
  writeFileSync(`${statePath}.tmp`, JSON.stringify(state))
  renameSync(`${statePath}.tmp`, statePath)
}

const client = await createClient({ relay, name: values.name, storage: values.db })
client.on('error', (err) => process.stderr.write(`bot: ${err.code}: ${err.message}\n`))
client.on('connection', (s) => process.stdout.write(`bot: ${s}\n`))

// Resolves once the relay admitted the bot and the history arrived: that history is not answered.
// With the relay unreachable it resolves after a while without it: what was sent before the join
// (by the senders' clocks) is history too when it comes.
const joiningAt = Date.now()
const conv = await client.join(invite)
const joinedUnsynced = state.answered[conv.id] === undefined && !conv.synced
const answered = new Set(state.answered[conv.id] ?? conv.messages().map((m) => m.id))
const remember = () => {
  state.answered[conv.id] = [...answered]
  saveState()
}
remember()

const wanted = (m: Message) => !m.mine && !answered.has(m.id) && !m.text.startsWith('🤖') && !(joinedUnsynced && m.sentAt < joiningAt)

/** Answer everything not answered yet; runs are queued, so each message is handled once. */
async function answer(): Promise<void> {
  const todo = conv.messages().filter(wanted)
  if (todo.length === 0) return
  for (const m of todo) answered.add(m.id)
  // Recorded before sending: at most once, even if the process dies right here.
  remember()
  for (const m of todo) await conv.send(`${PREFIX}${m.text}`)
  await conv.markRead()
}

let queue = Promise.resolve()
const schedule = () => {
  queue = queue.then(answer).catch((err: unknown) => {
    process.stderr.write(`bot: ${(err as Error).message}\n`)
  })
}
conv.subscribe(schedule)
schedule()
process.stdout.write(`bot: joined "${conv.title}" as ${values.name}\n`)

let stopping = false
const stop = () => {
  if (stopping) return
  stopping = true
  void queue.then(() => client.close()).finally(() => process.exit(0))
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
