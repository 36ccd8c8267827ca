-- Nothing is written back into an erased document, or into a removed tenant (core/store.ts
-- commitBatches, core/erasure.ts, scripts/lib/provisioner.ts).
--
-- Invariants:
-- - a commit stores no op-log row of an update that came after its document was deleted (an
--   erased one stays deleted), or before its document or tenant was erased, give or take the
--   clock skew between edges and PostgreSQL; and no state of a document without an op-log row,
--   or with an update the commit fenced;
-- - an erasure waits, after its rows are gone, for every commit that was writing then (core/
--   erasure.ts writeBarrier), and looks again: a commit whose statement started before the
--   deletion mark or the erasures row could not see them.

-- The commit's fence looks up erasures of the batch's tenants and documents.
CREATE INDEX erasures_scope ON erasures (tenant, doc_id);
