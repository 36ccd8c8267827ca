-- Data-quality reports (core/gap-watch.ts): a sequence-gap dead letter reports an update that
-- waits in its document for clocks that did not arrive; it is resolved (not removed) when they
-- come. Refusals (schema, apply, conflicting-duplicate, ...) are never resolved: NULL.
ALTER TABLE dead_letters ADD COLUMN resolved_at timestamptz;
-- Per-tenant views of the dead letters (docflow dlq, dashboards).
CREATE INDEX dead_letters_tenant ON dead_letters (tenant, created_at);
