-- When an event's job was last enqueued by the reaper (the receiver enqueues it on arrival).
ALTER TABLE webhook_events ADD COLUMN enqueued_at timestamptz;
