-- Materialized state: one row per document, the whole doc as one Yjs update.
CREATE TABLE docs (
  tenant          text        NOT NULL,
  doc_id          text        NOT NULL,
  state           bytea       NOT NULL,
  state_vector    bytea       NOT NULL,
  -- Stream sequence of the last update folded into `state`.
  last_stream_seq bigint      NOT NULL,
  op_count        bigint      NOT NULL DEFAULT 0,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, doc_id)
);

-- Immutable op log: every update that changed (or is waiting to change) a document.
CREATE TABLE op_log (
  id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant       text        NOT NULL,
  doc_id       text        NOT NULL,
  stream_seq   bigint      NOT NULL,
  msg_id       text        NOT NULL,
  user_id      text        NOT NULL,
  edge_id      text        NOT NULL,
  update       bytea       NOT NULL,
  -- 'pending': Yjs holds it until the clocks it depends on arrive.
  status       text        NOT NULL CHECK (status IN ('applied', 'pending')),
  ingest_ts    timestamptz NOT NULL,
  committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX op_log_msg_id ON op_log (tenant, doc_id, msg_id);
CREATE INDEX op_log_doc ON op_log (tenant, doc_id, id);

-- Last stream sequence a consumer has committed; written in the same transaction as the ops.
CREATE TABLE consumer_checkpoints (
  consumer   text        PRIMARY KEY,
  stream_seq bigint      NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Messages core could not apply, with the reason; never silently dropped.
CREATE TABLE dead_letters (
  id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  stream     text        NOT NULL,
  stream_seq bigint      NOT NULL,
  subject    text        NOT NULL,
  tenant     text,
  doc_id     text,
  reason     text        NOT NULL,
  payload    bytea       NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (stream, stream_seq)
);
