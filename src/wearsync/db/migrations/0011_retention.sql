-- The hourly pruning (db/retention.py) finds history past its retention by time: the oldest
-- tasks (also the operators' `wearsync tasks`, newest first) and handled webhook events.
CREATE INDEX sync_tasks_created_idx ON sync_tasks (created_at);
CREATE INDEX webhook_events_handled_idx ON webhook_events (received_at) WHERE status <> 'pending';
