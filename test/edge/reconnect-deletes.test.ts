import t from 'tap'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const { edge, url } = await stack.edge()

/** Every update the edge sent to JetStream, stored or deduplicated. */
const publishes = async () => (await counterValue(edge.metrics.updatesPublished)) + (await counterValue(edge.metrics.updatesDuplicate))

t.test('edge - a client that deleted text reconnects without republishing its delete set', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const writer = yclient(url, 'deleted', tok)
  t.teardown(() => writer.destroy())
  await writer.synced()
  writer.text.insert(0, 'keep this, drop that')
  writer.text.delete(10, 10)
  await until('materialized', async () => (await materializedText(core.url, 'deleted', tok)) === 'keep this,')
  for (let round = 1; round <= 3; round++) {
    // Each round deletes one more character, so the client's delete set differs every time
    // (the same bytes would only be deduplicated by JetStream's msg id window).
    writer.text.delete(0, 1)
    const expected = writer.text.toString()
    await until(`round ${round}: delete materialized`, async () => (await materializedText(core.url, 'deleted', tok)) === expected)
    const before = await publishes()
    writer.provider.disconnect()
    writer.provider.connect()
    await writer.synced()
    // The client answers the edge's sync step 1 with its whole delete set before anything else,
    // so once this edit is materialized the edge has handled the resync.
    writer.text.insert(writer.text.length, String(round))
    const withEdit = writer.text.toString()
    await until(`round ${round}: edit after reconnect materialized`, async () => (await materializedText(core.url, 'deleted', tok)) === withEdit)
    t.equal(await publishes(), before + 1, `round ${round}: only the new edit was published, not the resync`)
  }
  t.ok((await counterValue(edge.metrics.updatesAlreadyApplied)) >= 3, 'each resync was recognised as already applied')
})
