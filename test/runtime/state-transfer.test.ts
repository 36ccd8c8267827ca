import t from 'tap'
import { randomBytes } from 'node:crypto'
import { STATE_PART_BYTES, ServiceUser, encodeStateReplyPart } from '../../contracts/mod.ts'
import { isStateTransferError, requestState, respondState } from '../../runtime/state-transfer.ts'
import { setup } from '../helpers/setup.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const responder = await stack.connect(ServiceUser.Admin)
const requester = await stack.connect(ServiceUser.Admin)
const TIMEOUT_MS = 400

/** Answers requests on `subject` with three parts, `gapMs` apart, stopping after `sent` of them. */
function slowResponder(subject: string, gapMs: number, sent = 3) {
  return responder.subscribe(subject, {
    callback: (_err, msg) => {
      for (let part = 0; part < sent; part++) {
        setTimeout(() => msg.respond(encodeStateReplyPart({ status: 'found', transfer: 'x1', part, parts: 3, update: new Uint8Array([part]) })), part * gapMs)
      }
    },
  })
}

t.test('runtime - a state transfer whose parts keep coming is not cut off by its timeout', async (t) => {
  const sub = slowResponder('test.state.slow', 300)
  t.teardown(() => sub.unsubscribe())
  await responder.flush()
  const started = performance.now()
  const reply = await requestState(requester, 'test.state.slow', { tenant: 'acme', docId: 'd' }, TIMEOUT_MS)
  t.ok(performance.now() - started > TIMEOUT_MS, 'the whole transfer took longer than the timeout')
  t.same(reply, { status: 'found', update: Buffer.from([0, 1, 2]) }, 'all parts, in order')
})

t.test('runtime - a state transfer whose parts stop coming fails after the timeout, saying how far it got', async (t) => {
  const sub = slowResponder('test.state.stalled', 10, 1)
  t.teardown(() => sub.unsubscribe())
  await responder.flush()
  const err = await requestState(requester, 'test.state.stalled', { tenant: 'acme', docId: 'd' }, TIMEOUT_MS).catch((e: unknown) => e)
  t.ok(isStateTransferError(err))
  t.match((err as Error).message, /incomplete: 1\/3 parts, none in the last 400 ms/)
})

for (const withTail of [true, false]) t.test(`runtime - a state${withTail ? ', its tail' : ''} and its owners come back apart, whatever parts they were cut into`, async (t) => {
  // The state ends inside the second part, the tail spans the second and third, and the owners
  // (a document with many writers' client ids) outgrow a part of their own.
  const update = randomBytes(STATE_PART_BYTES + 10)
  const tail = withTail ? randomBytes(STATE_PART_BYTES) : undefined
  const owners = Array.from({ length: 60_000 }, (_, i) => [i * 7, `user-${i % 97}`] as [number, string])
  const subject = `test.state.tail.${withTail}`
  const sub = responder.subscribe(subject, { callback: (_err, msg) => respondState(msg, { status: 'found', update, ...(tail && { tail }), owners }) })
  t.teardown(() => sub.unsubscribe())
  await responder.flush()
  const reply = await requestState(requester, subject, { tenant: 'acme', docId: 'd', acceptsTail: true }, TIMEOUT_MS)
  if (reply?.status !== 'found') return t.fail(`no state: ${reply?.status}`)
  // Compared as booleans: a diff of megabytes takes tap a minute to print.
  t.ok(update.equals(reply.update), `the state, ${reply.update.byteLength} of ${update.byteLength} bytes`)
  t.ok(tail ? reply.tail && tail.equals(reply.tail) : reply.tail === undefined, `the tail, ${reply.tail?.byteLength} of ${tail?.byteLength} bytes`)
  t.ok(JSON.stringify(reply.owners) === JSON.stringify(owners), `the owners, ${reply.owners?.length} of ${owners.length}`)
})
