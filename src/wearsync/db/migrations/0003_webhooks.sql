-- Every webhook event, stored before it is acknowledged so that none is lost between receipt and
-- processing; the unique key makes a redelivered event a no-op.
CREATE TABLE webhook_events (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider          text NOT NULL,
    kind              text NOT NULL,           -- e.g. activities.push, activity.create, workout.updated
    provider_user_id  text NOT NULL,
    dedupe_key        text NOT NULL,
    payload           jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'processed', 'ignored', 'failed')),
    detail            text,                    -- why it was ignored or failed
    attempts          integer NOT NULL DEFAULT 0,
    received_at       timestamptz NOT NULL DEFAULT now(),
    processed_at      timestamptz,
    UNIQUE (provider, dedupe_key)
);
CREATE INDEX webhook_events_pending_idx ON webhook_events (received_at) WHERE status = 'pending';

-- Garmin backfill requests a sync made, and what the webhooks have delivered of them since.
CREATE TABLE garmin_backfills (
    task_id           uuid NOT NULL REFERENCES sync_tasks ON DELETE CASCADE,
    user_id           uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    summary_type      text NOT NULL,
    start_time        timestamptz NOT NULL,
    end_time          timestamptz NOT NULL,
    status            text NOT NULL CHECK (status IN ('accepted', 'duplicate')),
    requested_at      timestamptz NOT NULL DEFAULT now(),
    delivered_records integer NOT NULL DEFAULT 0,
    last_delivery_at  timestamptz,
    PRIMARY KEY (task_id, summary_type, start_time)
);
CREATE INDEX garmin_backfills_user_idx ON garmin_backfills (user_id, summary_type, start_time);
