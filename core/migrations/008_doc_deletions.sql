-- Soft deletion of documents (core/deletion.ts, `npm run docflow -- doc delete|restore`).
--
-- Invariant: a document is deleted exactly when the newest doc_deletions row of its tenant and
-- id says 'delete'. Nothing of the document is removed or changed: its op log, state and
-- snapshots stay as they were, so a restore shows it again whole. The table is the audit
-- history of every delete and restore (who, why, which database role, when) and is
-- append-only, like erasures. An erased document (docflow_erase) stays deleted: a client that
-- still holds its content cannot sync it back in, and the history of who deleted it remains.
CREATE TABLE doc_deletions (
  id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant   text        NOT NULL CHECK (tenant <> ''),
  doc_id   text        NOT NULL CHECK (doc_id <> ''),
  action   text        NOT NULL CHECK (action IN ('delete', 'restore')),
  -- Who asked (a person or a command), as the caller says.
  actor    text        NOT NULL CHECK (actor <> ''),
  reason   text        NOT NULL CHECK (reason <> ''),
  -- The database role that did it: not the caller's to choose.
  db_user  text        NOT NULL DEFAULT session_user,
  at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX doc_deletions_newest ON doc_deletions (tenant, doc_id, id DESC);

CREATE FUNCTION docflow_refuse_deletion_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'doc_deletions is an append-only audit table: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege', HINT = 'a restore is a new row with action ''restore''';
END $$;
CREATE TRIGGER doc_deletions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON doc_deletions
  FOR EACH STATEMENT EXECUTE FUNCTION docflow_refuse_deletion_change();
