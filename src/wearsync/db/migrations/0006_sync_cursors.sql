-- Where each connection's last successful sync of a data type got to, as its provider's API
-- allows (a modification time, the end of the last window): a sync without an explicit range
-- continues from there, so re-syncing an unchanged account costs the fewest upstream calls.
CREATE TABLE sync_cursors (
    user_id     uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    provider    text NOT NULL,
    data_type   text NOT NULL,
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, provider, data_type)
);
