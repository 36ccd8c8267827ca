import t from 'tap'
import * as Y from 'yjs'
import { jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream'
import { AGG_STREAM, ServiceUser, parseEditSubject, tenantStreamName } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until } from '../helpers/client.ts'
import { publishEdit } from '../helpers/edits.ts'

// Small quotas: AGG's cap follows them, and the tenant streams fill in a second.
const QUOTA = 1024 ** 2
const stack = await setup({ tenants: { acme: QUOTA, globex: QUOTA } })
t.teardown(() => stack.cleanup())
const svc = await jetstreamManager(await stack.connect(ServiceUser.Admin))
const js = jetstream(await stack.connect(ServiceUser.Edge))

/** One writer per document, appending; `accepted` is the text every PubAck'ed update adds up to. */
class Writer {
  readonly doc = new Y.Doc()
  accepted = ''
  constructor(
    readonly tenant: string,
    readonly docId: string,
  ) {}
  async append(text: string, via: JetStreamClient): Promise<boolean> {
    const before = Y.encodeStateVector(this.doc)
    const t = this.doc.getText('t')
    t.insert(t.length, text)
    try {
      await publishEdit(via, this.tenant, this.docId, Y.encodeStateAsUpdate(this.doc, before))
    } catch {
      return false // the tenant stream is full: its quota refuses the update (the edge closes with 4507)
    }
    this.accepted = t.toString()
    return true
  }
}

async function aggState() {
  const info = await svc.streams.info(AGG_STREAM)
  return { ...info.state, maxBytes: info.config.max_bytes, lag: (info.sources ?? []).reduce((n, s) => n + s.lag, 0) }
}

async function distinctUpdates(): Promise<number> {
  return (await stack.db.query('SELECT count(DISTINCT update)::int AS n FROM op_log')).rows[0].n
}

const writers = Array.from({ length: 8 }, (_, i) => new Writer(i % 2 ? 'globex' : 'acme', `fill-${i}`))

t.test('core - tenant streams filled to their quota while core is down: AGG keeps every edit, core materializes all', async (t) => {
  let published = 0
  for (let round = 0, full = new Set<string>(); full.size < 2; round++) {
    for (const w of writers) {
      if (full.has(w.tenant)) continue
      if (await w.append(`${w.docId}:${round}:${'x'.repeat(1_000)}|`, js)) published++
      else full.add(w.tenant)
    }
  }
  await until('AGG sourced every accepted edit', async () => (await aggState()).messages === published && (await aggState()).lag === 0, 30_000)
  const agg = await aggState()
  let tenantBytes = 0
  for (const tenant of ['acme', 'globex']) tenantBytes += (await (await jetstreamManager(await stack.connect({ tenant, kind: 'admin' }))).streams.info(tenantStreamName(tenant))).state.bytes
  t.comment(`${published} edits; tenant streams ${tenantBytes} B, AGG ${agg.bytes} B (${(agg.bytes / tenantBytes).toFixed(3)}x) of its ${agg.maxBytes} B cap`)
  t.equal(agg.first_seq, 1, 'AGG discarded nothing')
  t.ok(agg.bytes <= agg.maxBytes, 'AGG holds both full tenant streams within its cap')

  const core = await stack.core()
  await until('every published edit committed once', async () => (await distinctUpdates()) === published, 60_000)
  for (const w of writers) {
    t.equal(await materializedText(core.url, w.docId, await token({ tenant: w.tenant })), w.accepted, `${w.tenant}/${w.docId} materialized exactly what was accepted`)
  }
  await core.stop()
})

t.test('core - a partition whose stream lost uncommitted messages refuses to continue, loudly', async (t) => {
  // Free the tenants' quotas, then write while core is down and lose those messages from AGG.
  for (const tenant of ['acme', 'globex']) await stack.provisioner.setQuota(tenant, 8 * QUOTA)
  const w = new Writer('acme', 'hole-doc')
  const before = (await aggState()).last_seq
  t.ok(await w.append('lost ', js), 'published while core is down')
  await until('AGG has it', async () => (await aggState()).last_seq > before)
  const stored = await svc.streams.getMessage(AGG_STREAM, { last_by_subj: 'ten.acme.ed.*.hole-doc' })
  const partition = parseEditSubject(stored!.subject).partition
  // AGG discards its oldest messages at its cap: shrink the cap to see it happen, then restore it.
  // (Not a purge: a purge moves every consumer past the purged sequences, destroying the evidence.)
  const cap = (await aggState()).maxBytes
  await svc.streams.update(AGG_STREAM, { max_bytes: 1 })
  await until('AGG discarded it', async () => (await aggState()).messages === 0)
  await svc.streams.update(AGG_STREAM, { max_bytes: cap })
  t.ok(await w.append('after the hole', js), 'published after the loss')
  await until('AGG has the later edit', async () => (await aggState()).messages === 1)

  const core = await stack.core()
  const metric = async (name: string) => {
    const m = new RegExp(`${name}\\{[^}]*partition="${partition}"[^}]*\\} (\\d+)`).exec(await (await fetch(`${core.opsUrl}/metrics`)).text())
    return m ? Number(m[1]) : 0
  }
  await until('the hole is counted', async () => (await metric('docflow_core_stream_holes_total')) >= 1, 30_000)
  t.equal(await metric('docflow_core_partition_blocked'), 1, `partition ${partition} is flagged blocked`)
  t.equal((await stack.db.query(`SELECT count(*)::int AS n FROM op_log WHERE doc_id = 'hole-doc'`)).rows[0].n, 0, 'nothing past the hole was committed')
  await core.stop()
})
