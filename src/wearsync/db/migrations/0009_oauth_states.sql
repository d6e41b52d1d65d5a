-- Authorizations started with GET /api/v1/oauth/{provider}/authorize, until their callback: what
-- finishing one needs. The state itself is never stored, only its SHA-256 (like API keys); the
-- PKCE code verifier is encrypted like tokens. A used or expired row is kept a day, so a second
-- callback is told "already used" or "expired" rather than "unknown", then deleted.
CREATE TABLE oauth_states (
    state_hash      bytea PRIMARY KEY,
    application_id  uuid NOT NULL REFERENCES applications ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    provider        text NOT NULL,
    redirect_uri    text NOT NULL,
    code_verifier   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);
CREATE INDEX oauth_states_expires_idx ON oauth_states (expires_at);
