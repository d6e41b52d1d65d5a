-- Outgoing webhooks: an application's endpoints, and the delivery of each event to each endpoint
-- that takes its type (made with the event, in its statement: see db/events.py). PostgreSQL is the
-- delivery's truth: a delivery is pending until an answer 2xx or until it is given up; `due_at` is
-- when it is tried next, and while a worker sends it, until when that worker holds it (a worker
-- that died leaves it due again then).
CREATE TABLE webhook_endpoints (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    application_id         uuid NOT NULL REFERENCES applications ON DELETE CASCADE,
    url                    text NOT NULL,
    event_types            text[],  -- NULL: every type
    description            text NOT NULL DEFAULT '',
    secret                 text NOT NULL,  -- whsec_..., sealed with WEARSYNC_TOKEN_KEYS
    previous_secret        text,  -- sealed; signs too until previous_secret_until (a rotation's overlap)
    previous_secret_until  timestamptz,
    enabled                boolean NOT NULL DEFAULT true,
    disabled_reason        text,
    failing_since          timestamptz,  -- its first failed attempt since its last success
    last_success_at        timestamptz,  -- none since a delivery was made: failing throughout its retries
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_application_idx ON webhook_endpoints (application_id) WHERE enabled;

CREATE TABLE event_deliveries (
    event_id     bigint NOT NULL REFERENCES events ON DELETE CASCADE,
    endpoint_id  uuid NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    user_id      uuid,  -- the event's: deliveries of one user go in order
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,  -- since it was made or replayed: its backoff
    claims       integer NOT NULL DEFAULT 0,  -- ever: an answer is recorded only for the claim it answers
    due_at       timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),  -- (or replayed at) retries go on until this + 3 days
    finished_at  timestamptz,
    PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX event_deliveries_due_idx ON event_deliveries (endpoint_id, due_at, event_id) WHERE status = 'pending';
CREATE INDEX event_deliveries_endpoint_idx ON event_deliveries (endpoint_id);

CREATE TABLE delivery_attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      bigint NOT NULL,
    endpoint_id   uuid NOT NULL,
    attempted_at  timestamptz NOT NULL,
    status_code   integer,  -- NULL: no answer (see error)
    latency_ms    double precision NOT NULL,
    response      text,  -- the answer's first bytes
    error         text,
    FOREIGN KEY (event_id, endpoint_id) REFERENCES event_deliveries ON DELETE CASCADE
);
CREATE INDEX delivery_attempts_event_idx ON delivery_attempts (event_id, endpoint_id, attempted_at);
