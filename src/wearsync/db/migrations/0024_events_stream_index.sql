-- The live stream reads an application's events in commit order, (tx, id), after a position and
-- up to the oldest transaction still running (db/stream.py): one range scan of this index.
CREATE INDEX events_application_tx_idx ON events (application_id, tx, id);
