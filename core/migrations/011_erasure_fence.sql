-- Nothing is written back into an erased document, or into a removed tenant (core/store.ts
-- commitBatches, core/erasure.ts, scripts/lib/provisioner.ts).
--
-- Invariants:
-- - a commit stores no op-log row of a document that is deleted when its statement starts (an
--   erased one stays deleted), nor of one whose document or tenant was erased after the update
--   was ingested; no dead letter of a deleted document; and no state of a document without an
--   op-log row (its rows erased, and none of this commit passed);
-- - an erasure waits, after its rows are gone, for every commit that was writing then
--   (docflow_write_barrier), and looks again: a commit whose statement started before the
--   deletion mark or the erasures row could not see them.

-- The commit's fence looks up erasures of the batch's tenants and documents.
CREATE INDEX erasures_scope ON erasures (tenant, doc_id);

-- Returns once every transaction that holds a write lock on the op log (a commit in flight) has
-- ended; commits that start meanwhile wait that long, then go on. Call it alone (its own
-- transaction), so the lock is let go at once. SECURITY DEFINER: LOCK in SHARE mode needs
-- rights on op_log the erasing role does not have.
CREATE FUNCTION docflow_write_barrier() RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  LOCK TABLE op_log IN SHARE MODE;
END $$;
REVOKE EXECUTE ON FUNCTION docflow_write_barrier() FROM PUBLIC;
DO $$ BEGIN
  EXECUTE format('ALTER FUNCTION docflow_write_barrier() SET search_path = %I, pg_temp', current_schema());
END $$;
