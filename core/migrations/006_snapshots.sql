-- Snapshots of document states in the blob store (core/snapshots.ts): which exist, up to which
-- stream sequence each holds a document, and the ingest time of the newest update it holds
-- (point-in-time reads pick the newest snapshot at or before a sequence or a time).
CREATE TABLE snapshots (
  tenant         text        NOT NULL,
  doc_id         text        NOT NULL,
  -- Every op-log row of the document with stream_seq <= this is in the snapshot.
  stream_seq     bigint      NOT NULL,
  last_ingest_ts timestamptz NOT NULL,
  blob_key       text        NOT NULL,
  bytes          bigint      NOT NULL,
  taken_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, doc_id, stream_seq)
);
