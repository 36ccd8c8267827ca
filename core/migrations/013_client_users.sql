-- Which user first wrote with each Yjs client id of a document, as of its compacted state
-- ({"<client id>": "<user id>"}; core/client-users.ts). Core refuses another user's structs under
-- a client id (foreign-client): a forgery of an offline author's next clocks would make Yjs drop
-- that author's edits everywhere. Written with the state at compaction; a cold load adds the
-- first writers of the op-log tail. Null for states compacted before this column: their client
-- ids have no known owner and are free.
ALTER TABLE docs ADD COLUMN client_users jsonb;
