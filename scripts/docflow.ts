// `npm run docflow -- <command>` (also the `docflow` bin): operations on a running DocFlow.
//   doc delete  --tenant <t> --doc <id> --actor <who> --reason <why>   hide a document (restorable)
//   doc restore --tenant <t> --doc <id> --actor <who> --reason <why>   show it again, whole
//   doc erase   --tenant <t> --doc <id> --actor <who> --reason <why>   remove it everywhere (GDPR)
// Every command takes --json (one JSON object on stdout). Exit status 0 on success; otherwise
// a one-line reason on stderr and 1 (the operation failed) or 2 (the command line is wrong).
// While erase deletes stream messages or blobs one by one, it says how far it is on stderr.
// Where it connects: scripts/lib/ops-context.ts.
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import type { NatsConnection } from '@nats-io/transport-node'
import { DocEvent, DocId, ServiceSubjects, TenantId, AGG_STREAM, encodeDocNotice, type DocNotice } from '../contracts/mod.ts'
import { createLogger } from '../runtime/log.ts'
import { deleteDocument, restoreDocument, type DocChange } from '../core/deletion.ts'
import { eraseDocument, type ErasureProgress } from '../core/erasure.ts'
import { isDocDeletionError } from '../core/errors.ts'
import { OpsContext, OpsError, explainDbError } from './lib/ops-context.ts'

/** What a command prints: a line for people, an object for --json. */
interface Outcome {
  line: string
  json: object
}

interface Command {
  summary: string
  options: Record<string, { type: 'string' | 'boolean' }>
  run(values: Record<string, string | boolean | undefined>, ctx: OpsContext): Promise<Outcome>
}

/** The command line is wrong (exit 2, with the usage). */
class UsageError extends Error {
  override name = 'UsageError'
}

const DOC_CHANGE_OPTIONS = { tenant: { type: 'string' }, doc: { type: 'string' }, actor: { type: 'string' }, reason: { type: 'string' } } as const

/** What each long erasure step's progress line counts (core/erasure.ts ErasureProgress). */
const ERASURE_STEPS: Record<ErasureProgress['step'], string> = { 'agg-messages': `${AGG_STREAM} messages deleted`, 'snapshot-blobs': 'snapshot blobs deleted' }

const log = createLogger('docflow', process.env.LOG_LEVEL ?? 'info', pino.destination(2))

const COMMANDS: Record<string, Command> = {
  'doc delete': {
    summary: '--tenant <t> --doc <id> --actor <who> --reason <why>   hide a document: read API 404, edges close it with 4410 (restorable)',
    options: DOC_CHANGE_OPTIONS,
    async run(values, ctx) {
      const change = docChange(values)
      const nc = await ctx.nc() // reachable before anything is recorded
      const record = await deleteDocument(await ctx.db(), change)
      await notify(nc, { tenant: change.tenant, docId: change.docId, event: DocEvent.Deleted })
      log.info({ audit: 'doc-delete', ...record }, 'document deleted')
      return { line: `deleted ${change.tenant}/${change.docId} (audit row ${record.id}); edges closed its sockets, restore with \`doc restore\``, json: { ok: true, ...record } }
    },
  },
  'doc restore': {
    summary: '--tenant <t> --doc <id> --actor <who> --reason <why>   show a deleted document again, with everything it had',
    options: DOC_CHANGE_OPTIONS,
    async run(values, ctx) {
      const change = docChange(values)
      const nc = await ctx.nc()
      const record = await restoreDocument(await ctx.db(), change)
      await notify(nc, { tenant: change.tenant, docId: change.docId, event: DocEvent.Restored })
      log.info({ audit: 'doc-restore', ...record }, 'document restored')
      return { line: `restored ${change.tenant}/${change.docId} (audit row ${record.id})`, json: { ok: true, ...record } }
    },
  },
  'doc erase': {
    summary: '--tenant <t> --doc <id> --actor <who> --reason <why>   remove a document everywhere: op log, state, snapshots, stream messages, memory (it stays deleted)',
    options: DOC_CHANGE_OPTIONS,
    async run(values, ctx) {
      const change = docChange(values)
      // Before anything is marked: erasing keeps the id deleted for good, and a tenant the
      // registry does not know has nothing stored to erase.
      const tenantJsm = await ctx.tenantJsm(change.tenant)
      if (!tenantJsm) throw new OpsError(`unknown tenant ${change.tenant}`)
      const nc = await ctx.nc()
      const doc = `${change.tenant}/${change.docId}`
      const report = await eraseDocument(
        { pool: await ctx.db(), blobs: await ctx.blobs(), aggJsm: await ctx.aggJsm(), aggStream: AGG_STREAM, tenantJsm, notify: (n) => notify(nc, n), progress: (p) => console.error(`docflow doc erase: ${doc}: ${ERASURE_STEPS[p.step]} ${p.done} of ${p.total}`) },
        change,
      )
      log.info({ audit: 'doc-erase', actor: change.actor, reason: change.reason, ...report }, 'document erased')
      const rows = Object.entries(report.rowsRemoved).map(([table, n]) => `${n} ${table}`).join(', ')
      const streams = report.streams.map((s) => `${s.removed} from ${s.stream}${s.kept ? ` (kept: ${s.kept})` : ''}`).join('; ')
      return {
        line: `erased ${change.tenant}/${change.docId} (erasure ${report.erasureIds.join(', ')}): rows ${rows}; ${report.snapshotBlobsDeleted} snapshot blobs; messages ${streams}`,
        json: { ok: true, ...report },
      }
    },
  },
}

function usage(): string {
  return ['usage: npm run docflow -- <command> [--json]', ...Object.entries(COMMANDS).map(([name, c]) => `  ${name} ${c.summary}`)].join('\n')
}

function docChange(values: Record<string, string | boolean | undefined>): DocChange {
  const text = (name: string): string => {
    const v = values[name]
    if (typeof v !== 'string' || v.trim() === '') throw new UsageError(`--${name} is required`)
    return v
  }
  const tenant = TenantId.safeParse(text('tenant'))
  if (!tenant.success) throw new UsageError(`bad --tenant: ${tenant.error.issues[0]?.message}`)
  const docId = DocId.safeParse(text('doc'))
  if (!docId.success) throw new UsageError(`bad --doc: ${docId.error.issues[0]?.message}`)
  return { tenant: tenant.data, docId: docId.data, actor: text('actor'), reason: text('reason') }
}

/** Tells every edge and core, and waits until nats-server has it. */
async function notify(nc: NatsConnection, notice: DocNotice): Promise<void> {
  nc.publish(ServiceSubjects.docNotice, encodeDocNotice(notice))
  await nc.flush()
}

/** One line, whatever the error carried. */
const oneLine = (text: string) => text.replace(/\s*\n\s*/g, ' ').trim()

/** Every command's options, to tell option values from command words before the command is known. */
const ALL_OPTIONS = Object.assign({}, ...Object.values(COMMANDS).map((c) => c.options)) as Command['options']

async function main(argv: string[]): Promise<number> {
  // Lenient here (strict parsing, with the command's own options, comes below): the command is
  // the first two positionals, wherever the options are (`--tenant acme doc delete ...`).
  const name = parseArgs({ args: argv, allowPositionals: true, strict: false, options: ALL_OPTIONS }).positionals.slice(0, 2).join(' ')
  if (argv.includes('--help') || argv.includes('-h') || argv.length === 0) {
    console.log(usage())
    return argv.length === 0 ? 2 : 0
  }
  const command = COMMANDS[name]
  if (!command) {
    console.error(`docflow: unknown command ${JSON.stringify(name)}; see npm run docflow -- --help`)
    return 2
  }
  const ctx = new OpsContext()
  try {
    const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { ...command.options, json: { type: 'boolean' } } })
    if (positionals.length !== 2) throw new UsageError(`unexpected arguments: ${positionals.slice(2).join(' ')}`)
    const outcome = await command.run(values, ctx)
    console.log(values.json ? JSON.stringify(outcome.json) : outcome.line)
    return 0
  } catch (caught) {
    const err = explainDbError(caught)
    const code = (err as { code?: unknown }).code
    const usageError = err instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))
    console.error(`docflow ${name}: ${oneLine((err as Error).message)}`)
    if (usageError) return 2
    if (!(err instanceof OpsError) && !isDocDeletionError(err)) log.error({ err }, `${name} failed`)
    return 1
  } finally {
    await ctx.close()
  }
}

process.exitCode = await main(process.argv.slice(2))
