-- The stream messages a document's erasure has still to delete (core/erasure.ts). Their
-- sequences are read from the rows the erasure removes, so a run that failed after its rows went
-- (NATS away) could not find them again, and the messages (socket edits, in partition batches
-- no purge by subject matches) kept the erased content until the stream's max_age.
--
-- Invariant: written in the transaction that erases the rows, with every sequence an earlier run
-- left here; gone once those messages are deleted, or with the tenant.
CREATE TABLE erasure_pending_messages (
  erasure_id bigint NOT NULL PRIMARY KEY,
  tenant     text   NOT NULL,
  doc_id     text   NOT NULL,
  stream     text   NOT NULL,
  seqs       bigint[] NOT NULL
);
CREATE INDEX erasure_pending_messages_doc ON erasure_pending_messages (tenant, doc_id);
