-- At most one open task per user, provider, data types and parameters: a request for the same
-- sync while one is queued or running gets that task (coalescing), atomically.
UPDATE sync_tasks t SET status = 'failed', error = 'superseded by an identical open task', finished_at = now()
WHERE t.status IN ('queued', 'running') AND EXISTS (
    SELECT 1 FROM sync_tasks o
    WHERE o.status IN ('queued', 'running') AND o.user_id = t.user_id AND o.provider = t.provider
      AND o.data_types = t.data_types AND o.params = t.params
      AND (o.created_at, o.id) > (t.created_at, t.id));
CREATE UNIQUE INDEX sync_tasks_one_open_idx ON sync_tasks (user_id, provider, data_types, params)
    WHERE status IN ('queued', 'running');
