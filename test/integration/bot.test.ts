/** examples/bot as a child process: joins from an invite, answers each message once, also across a restart. */
import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { until, World } from './harness.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

let world: World
const bots: ChildProcess[] = []
afterEach(async () => {
  for (const bot of bots.splice(0)) bot.kill('SIGKILL')
  await world?.close()
})

function startBot(invite: string): { proc: ChildProcess; output: () => string } {
  let out = ''
  const proc = spawn(process.execPath, ['--import', 'tsx', 'examples/bot/bot.ts', world.url, invite, '--db', join(world.dir, 'bot.db')], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  proc.stdout!.on('data', (chunk: Buffer) => {
    out += chunk.toString()
  })
  proc.stderr!.on('data', (chunk: Buffer) => {
    out += chunk.toString()
  })
  bots.push(proc)
  return { proc, output: () => out }
}

const stopped = (proc: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (proc.exitCode !== null) return resolve(proc.exitCode)
    proc.once('exit', (code) => resolve(code))
  })

describe('examples/bot', () => {
  it('joins from an invite and answers each message from others once', { timeout: 60_000 }, async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    await until(() => alice.connection === 'online', 10_000, 'alice online')
    const conv = await alice.createConversation({ title: 'Bot room' })
    await conv.send('history the bot does not answer')
    const invite = await conv.invite()

    const bot = startBot(invite)
    await until(() => bot.output().includes('bot: joined "Bot room"'), 30_000, 'the bot joined')
    await conv.send('hello bot')
    const reply = await until(() => conv.messages().find((m) => m.text === '🤖 you said: hello bot'), 20_000, "the bot's answer")
    expect(reply.mine).toBe(false)
    expect(reply.authorName).toBe('Echo bot')
    // The bot marks what it answered as read: blue ✓✓ for alice.
    await until(() => conv.messages().find((m) => m.text === 'hello bot')?.status === 'read', 10_000, 'read by the bot')

    bot.proc.kill('SIGTERM')
    expect(await stopped(bot.proc)).toBe(0)
    await conv.send('while you were away')
    const again = startBot(invite)
    await until(() => conv.messages().some((m) => m.text === '🤖 you said: while you were away'), 30_000, 'answer after restart')
    await new Promise((r) => setTimeout(r, 500))
    const answers = conv.messages().filter((m) => m.text.startsWith('🤖'))
    expect(answers.map((m) => m.text)).toEqual(['🤖 you said: hello bot', '🤖 you said: while you were away'])
    expect(again.output()).not.toMatch(/bot: [A-Z_]+: /)
    again.proc.kill('SIGTERM')
    expect(await stopped(again.proc)).toBe(0)
  })
})
