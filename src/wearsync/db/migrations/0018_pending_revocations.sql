-- A withdrawal of our access upstream (a disconnect, a user's deletion) that failed for a reason
-- that may pass (the provider down, slow or rate limiting) is tried again by the workers: the
-- tokens it needs are kept here, encrypted as in provider_connections, until it succeeds or its
-- tries run out; also after the user, and so the connection, is deleted (no foreign key).
CREATE TABLE pending_revocations (
    id bigserial PRIMARY KEY,
    provider text NOT NULL,
    user_id uuid NOT NULL,
    application_id uuid NOT NULL,
    provider_user_id text NOT NULL,
    access_token text NOT NULL,
    refresh_token text,
    expires_at timestamptz,
    scopes text[] NOT NULL,
    tries integer NOT NULL,
    retry_at timestamptz NOT NULL,
    last_error text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_revocations_retry_idx ON pending_revocations (retry_at);
