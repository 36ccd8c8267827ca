-- The op-log id a snapshot's state holds every row through. A redelivered update can commit
-- after later ones of its document (worker.ts: a delivery lost in flight is applied, not
-- skipped), so "every row with stream_seq <= the snapshot's" does not hold for it: the state at
-- a sequence is the snapshot plus the rows committed after it (id > this) up to that sequence.
-- NULL for snapshots taken before this column existed (point-in-time falls back to stream_seq).
ALTER TABLE snapshots ADD COLUMN through_op_id bigint;
