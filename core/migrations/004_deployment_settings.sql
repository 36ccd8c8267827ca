-- Settings a deployment fixes when it is first used; core refuses to start with another value.
CREATE TABLE deployment_settings (
  name text PRIMARY KEY,
  value text NOT NULL,
  set_at timestamptz NOT NULL DEFAULT now()
);
-- A database core already wrote to was used with the 16 partitions that were fixed in code then.
INSERT INTO deployment_settings (name, value) SELECT 'edit_partitions', '16' WHERE EXISTS (SELECT 1 FROM consumer_checkpoints);
