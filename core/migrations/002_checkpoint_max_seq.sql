-- The checkpoint (stream_seq) is the end of the contiguous run of committed stream sequences:
-- a consumer restarts after it. max_seq is the highest stream sequence ever committed: a
-- message at or below it may already be in the op log, so it is looked up before it is skipped.
-- Checkpoints written before this migration were the highest sequence seen.
ALTER TABLE consumer_checkpoints ADD COLUMN max_seq bigint NOT NULL DEFAULT 0;
UPDATE consumer_checkpoints SET max_seq = stream_seq;
