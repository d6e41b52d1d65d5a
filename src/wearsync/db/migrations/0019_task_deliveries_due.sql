-- A sync whose data only comes later by webhook (Garmin's backfills) stays running after its
-- requests, until every window it asked for has been delivered or this time has passed.
ALTER TABLE sync_tasks ADD COLUMN deliveries_due_at timestamptz;
CREATE INDEX sync_tasks_awaiting_deliveries_idx ON sync_tasks (deliveries_due_at)
    WHERE status = 'running' AND deliveries_due_at IS NOT NULL;
