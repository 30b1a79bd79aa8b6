/**
 * The package's published types (`exports` in package.json): built as `npm run build` builds
 * them (engine-internal members stripped, `@internal`), they must compile for an app, with its
 * library check on, and show the app API only.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

const root = join(import.meta.dirname, '../..')
const tsc = join(root, 'node_modules/typescript/bin/tsc')

describe('published types', () => {
  it('compile for an app with skipLibCheck off, and leave the engine-internal members out', () => {
    // Under node_modules: the app's imports of yjs, hono… resolve as an installed app's do.
    mkdirSync(join(root, 'node_modules/.cache'), { recursive: true })
    const out = mkdtempSync(join(root, 'node_modules/.cache/petrel-types-'))
    try {
      execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', out, '--emitDeclarationOnly', '--declaration'], { stdio: 'pipe' })
      const app = join(out, 'app.ts')
      writeFileSync(
        app,
        [
          "import { createClient } from './src/client/index.js'",
          "import { createRelay } from './src/relay/index.js'",
          "import { crypto, ErrorCode } from './src/shared/index.js'",
          'export async function main(): Promise<void> {',
          "  const relay = await createRelay({ port: 0, database: ':memory:' })",
          "  const client = await createClient({ relay: relay.url, storage: ':memory:', name: String(crypto.randomBytes(1)[0]) })",
          "  const conv = await client.createConversation({ title: 'Trip' })",
          "  await conv.send('hello')",
          '  console.log(conv.isAdmin(), conv.synced, conv.messages().length, ErrorCode.Closed)',
          '  await client.close()',
          '  await relay.close()',
          '}',
        ].join('\n'),
      )
      writeFileSync(
        join(out, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: { strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', skipLibCheck: false, types: ['node'], typeRoots: [join(root, 'node_modules/@types')] },
          files: [app],
        }),
      )
      try {
        execFileSync(process.execPath, [tsc, '-p', join(out, 'tsconfig.json')], { stdio: 'pipe', cwd: root })
      } catch (err) {
        throw new Error(String((err as { stdout?: Buffer }).stdout ?? err))
      }
      const conversation = readFileSync(join(out, 'src/client/conversation.d.ts'), 'utf8')
      for (const internal of ['writeRecords(', 'rotateKey(', 'whenSynced(', 'keys():', 'joinSettled(', 'deniedByRelay', 'saveSummary(']) expect(conversation, internal).not.toContain(internal)
      for (const api of ['send(text: string)', 'setTitle(', 'leave()', 'isAdmin()', 'get synced()']) expect(conversation, api).toContain(api)
    } finally {
      rmSync(out, { recursive: true, force: true })
    }
  }, 120_000)
})
