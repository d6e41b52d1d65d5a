-- Tasks started by the scheduler (incremental syncs of every active pull connection).
ALTER TABLE sync_tasks DROP CONSTRAINT sync_tasks_mode_check;
ALTER TABLE sync_tasks ADD CONSTRAINT sync_tasks_mode_check CHECK (mode IN ('async', 'sync', 'scheduled'));
CREATE INDEX sync_tasks_connection_recent_idx ON sync_tasks (user_id, provider, created_at DESC);
