-- A document's state is now written at compaction (every few hundred ops), not per batch: the
-- materialized document is its compacted state plus the op-log rows after through_op_id.
-- Rows written before this migration folded every op of their document.
ALTER TABLE docs ADD COLUMN through_op_id bigint NOT NULL DEFAULT 0;
UPDATE docs d SET through_op_id = COALESCE((SELECT max(o.id) FROM op_log o WHERE o.tenant = d.tenant AND o.doc_id = d.doc_id), 0);

-- A batch message carries several updates: a dead letter names which one.
ALTER TABLE dead_letters ADD COLUMN item int NOT NULL DEFAULT 0;
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_stream_stream_seq_key;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_stream_seq_item UNIQUE (stream, stream_seq, item);
