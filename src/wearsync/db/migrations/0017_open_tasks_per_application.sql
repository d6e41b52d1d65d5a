-- A new sync is refused past a cap on the application's open tasks: counted on this index
-- (the user's are counted on sync_tasks_one_open_idx, which leads with user_id).
CREATE INDEX sync_tasks_open_application_idx ON sync_tasks (application_id) WHERE status IN ('queued', 'running');
