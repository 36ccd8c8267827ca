-- A tenant's removal (docflow_erase(tenant, NULL, ...), `npm run tenant -- remove`) also erases
-- its snapshot rows and its documents' delete/restore history. Both outlived the tenant: a
-- snapshot is never pruned while it is its document's newest, so `state?at=` of a tenant added
-- later under the same name started from the removed tenant's content, and a delete in the
-- history hid (404, 4410) the new tenant's document of the same id.
--
-- Invariant: doc_deletions rows leave only with a whole-tenant erasures row written in the same
-- transaction, so one document's erasure still leaves it deleted (migration 008) and the
-- history is never edited otherwise. erasures itself stays, always: it is the record that the
-- tenant was erased, by whom and why, and holds no content. The snapshot blobs those rows
-- named are deleted by the caller afterwards (row before blob, as retention does), by listing
-- the tenant's prefix, so a rerun after a crash finds what is left.

CREATE FUNCTION docflow_check_tenant_erasure() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  stray record;
BEGIN
  SELECT g.tenant, g.doc_id INTO stray FROM gone g
  WHERE NOT EXISTS (SELECT 1 FROM erasures e WHERE e.xact = txid_current() AND e.tenant = g.tenant AND e.doc_id IS NULL)
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'doc_deletions is an append-only audit table: DELETE of tenant % document % refused (no erasure of the whole tenant recorded)', stray.tenant, stray.doc_id
      USING ERRCODE = 'insufficient_privilege', HINT = 'a restore is a new row with action ''restore''; a removed tenant''s history goes with docflow_erase(tenant, NULL, reason, actor)';
  END IF;
  RETURN NULL;
END $$;

DROP TRIGGER doc_deletions_append_only ON doc_deletions;
CREATE TRIGGER doc_deletions_no_change BEFORE UPDATE OR TRUNCATE ON doc_deletions
  FOR EACH STATEMENT EXECUTE FUNCTION docflow_refuse_deletion_change();
CREATE TRIGGER doc_deletions_tenant_erasure_only AFTER DELETE ON doc_deletions REFERENCING OLD TABLE AS gone
  FOR EACH STATEMENT EXECUTE FUNCTION docflow_check_tenant_erasure();

-- As in migration 005, plus, for a whole tenant, its snapshot rows and deletion history. One
-- document's snapshot rows stay with core/erasure.ts, which deletes them beside this call in
-- its transaction for their blob keys. rows_removed of one document keeps its three tables.
CREATE OR REPLACE FUNCTION docflow_erase(p_tenant text, p_doc_id text, p_reason text, p_actor text) RETURNS erasures
LANGUAGE sql SECURITY DEFINER AS $$
  WITH ops AS (
    DELETE FROM op_log WHERE tenant = p_tenant AND (p_doc_id IS NULL OR doc_id = p_doc_id) RETURNING 1
  ), states AS (
    DELETE FROM docs WHERE tenant = p_tenant AND (p_doc_id IS NULL OR doc_id = p_doc_id) RETURNING 1
  ), dead AS (
    DELETE FROM dead_letters WHERE tenant = p_tenant AND (p_doc_id IS NULL OR doc_id = p_doc_id) RETURNING 1
  ), snaps AS (
    DELETE FROM snapshots WHERE tenant = p_tenant AND p_doc_id IS NULL RETURNING 1
  ), history AS (
    DELETE FROM doc_deletions WHERE tenant = p_tenant AND p_doc_id IS NULL RETURNING 1
  )
  INSERT INTO erasures (tenant, doc_id, actor, reason, rows_removed)
  VALUES (p_tenant, p_doc_id, p_actor, p_reason, jsonb_build_object(
    'op_log', (SELECT count(*) FROM ops), 'docs', (SELECT count(*) FROM states), 'dead_letters', (SELECT count(*) FROM dead))
    || CASE WHEN p_doc_id IS NULL THEN jsonb_build_object('snapshots', (SELECT count(*) FROM snaps), 'doc_deletions', (SELECT count(*) FROM history)) ELSE '{}' END)
  RETURNING *
$$;
-- CREATE OR REPLACE keeps the owner and the grants (not executable by PUBLIC), but not the
-- pinned search_path: pin it again, as migration 005 does.
DO $$ BEGIN
  EXECUTE format('ALTER FUNCTION docflow_erase(text, text, text, text) SET search_path = %I, pg_temp', current_schema());
END $$;
