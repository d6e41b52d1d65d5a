-- A webhook event whose processing failed for a reason that may pass (an upstream error, a rate
-- limit, Redis or PostgreSQL away) is `failed` with the time it is tried again: the reaper
-- enqueues it then. NULL: failed for good (or not failed).
ALTER TABLE webhook_events ADD COLUMN retry_at timestamptz;
CREATE INDEX webhook_events_retry_idx ON webhook_events (retry_at) WHERE status = 'failed' AND retry_at IS NOT NULL;
