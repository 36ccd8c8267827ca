-- The op log is append-only, and the database itself says so.
--
-- Invariant: an op-log row never changes, and it leaves only together with an `erasures` row
-- written in the same transaction that names its tenant (and document, unless the whole tenant
-- goes), who asked, why, and the database role that did it. UPDATE and TRUNCATE are refused
-- outright; a DELETE is refused unless such an audit row covers every row it removed. The
-- documented way to erase is `docflow_erase(tenant, doc_id, reason, actor)`, which removes the
-- rows and writes the audit row in one statement. `erasures` itself refuses UPDATE, DELETE and
-- TRUNCATE, always.
--
-- Why an audit row and not a session flag: any session can SET a custom setting, so a trigger
-- that trusts one would let a hand-typed DELETE through unrecorded. Tying the DELETE to an audit
-- row in its own transaction means a deletion cannot commit without its record, whoever runs it.
-- What this cannot stop is the tables' owner dropping or disabling the triggers (DDL, visible in
-- the server log): run core as a role that does not own the tables, and grant EXECUTE on
-- docflow_erase to the role that erases (it is SECURITY DEFINER, so that role needs no DELETE).

-- Event time: when the client made the edit (HTTP ingest's X-Event-Time), beside ingest_ts (when
-- the edge received it). Socket updates carry no time, so core writes ingest_ts there. Rows from
-- before this migration have none (NULL: read it as ingest_ts); filling them in would rewrite the
-- whole log.
ALTER TABLE op_log ADD COLUMN event_ts timestamptz;

CREATE TABLE erasures (
  id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant       text        NOT NULL CHECK (tenant <> ''),
  -- NULL: every document of the tenant.
  doc_id       text        CHECK (doc_id <> ''),
  -- Who asked (a person or a command), as the caller says.
  actor        text        NOT NULL CHECK (actor <> ''),
  reason       text        NOT NULL CHECK (reason <> ''),
  -- The database role that ran it: not the caller's to choose.
  db_user      text        NOT NULL DEFAULT session_user,
  -- Rows removed per table, e.g. {"op_log": 120, "docs": 1, "dead_letters": 0}.
  rows_removed jsonb       NOT NULL,
  -- The transaction that erased: the op-log trigger looks for its own.
  xact         bigint      NOT NULL DEFAULT txid_current(),
  at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX erasures_xact ON erasures (xact);

CREATE FUNCTION docflow_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'erasures' THEN
    RAISE EXCEPTION 'erasures is an append-only audit table: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
  END IF;
  RAISE EXCEPTION 'op_log is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'a tenant or a document is erased with SELECT * FROM docflow_erase(tenant, doc_id or NULL, reason, actor), which records the erasure in erasures';
END $$;

-- Runs after the DELETE statement (and after every other part of a WITH statement), with the
-- rows it removed.
CREATE FUNCTION docflow_check_erasure() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  stray record;
BEGIN
  SELECT g.tenant, g.doc_id INTO stray FROM gone g
  WHERE NOT EXISTS (
    SELECT 1 FROM erasures e
    WHERE e.xact = txid_current() AND e.tenant = g.tenant AND (e.doc_id IS NULL OR e.doc_id = g.doc_id)
  ) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'op_log is append-only: DELETE of tenant % document % refused (no erasure recorded for it)', stray.tenant, stray.doc_id
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'a tenant or a document is erased with SELECT * FROM docflow_erase(tenant, doc_id or NULL, reason, actor), which records the erasure in erasures';
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER op_log_no_update BEFORE UPDATE ON op_log FOR EACH STATEMENT EXECUTE FUNCTION docflow_refuse_change();
CREATE TRIGGER op_log_no_truncate BEFORE TRUNCATE ON op_log FOR EACH STATEMENT EXECUTE FUNCTION docflow_refuse_change();
CREATE TRIGGER op_log_erasure_only AFTER DELETE ON op_log REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION docflow_check_erasure();
CREATE TRIGGER erasures_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON erasures FOR EACH STATEMENT EXECUTE FUNCTION docflow_refuse_change();

-- The audited erasure: a tenant's (doc_id NULL) or one document's op log, state and dead letters
-- go, and one erasures row records it, in one statement. Returns that row.
CREATE FUNCTION docflow_erase(p_tenant text, p_doc_id text, p_reason text, p_actor text) RETURNS erasures
LANGUAGE sql SECURITY DEFINER AS $$
  WITH ops AS (
    DELETE FROM op_log WHERE tenant = p_tenant AND (p_doc_id IS NULL OR doc_id = p_doc_id) RETURNING 1
  ), states AS (
    DELETE FROM docs WHERE tenant = p_tenant AND (p_doc_id IS NULL OR doc_id = p_doc_id) RETURNING 1
  ), dead AS (
    DELETE FROM dead_letters WHERE tenant = p_tenant AND (p_doc_id IS NULL OR doc_id = p_doc_id) RETURNING 1
  )
  INSERT INTO erasures (tenant, doc_id, actor, reason, rows_removed)
  VALUES (p_tenant, p_doc_id, p_actor, p_reason, jsonb_build_object(
    'op_log', (SELECT count(*) FROM ops), 'docs', (SELECT count(*) FROM states), 'dead_letters', (SELECT count(*) FROM dead)))
  RETURNING *
$$;
REVOKE EXECUTE ON FUNCTION docflow_erase(text, text, text, text) FROM PUBLIC;
-- A SECURITY DEFINER function resolves names only in the schema the tables are in (then
-- pg_temp, last), never in a schema the caller can create objects in.
DO $$ BEGIN
  EXECUTE format('ALTER FUNCTION docflow_erase(text, text, text, text) SET search_path = %I, pg_temp', current_schema());
END $$;
