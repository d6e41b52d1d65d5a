-- A connection belongs to its user's application, and within one application an upstream account
-- is actively connected to one user at most: a webhook event then reaches one connection per
-- application that connected the account. Older active duplicates (which webhooks could not tell
-- apart) are deactivated; the newest stays.
ALTER TABLE users ADD CONSTRAINT users_id_application_key UNIQUE (id, application_id);
ALTER TABLE provider_connections ADD COLUMN application_id uuid;
UPDATE provider_connections c SET application_id = u.application_id FROM users u WHERE u.id = c.user_id;
ALTER TABLE provider_connections
    ALTER COLUMN application_id SET NOT NULL,
    ADD CONSTRAINT provider_connections_user_application_fkey
        FOREIGN KEY (user_id, application_id) REFERENCES users (id, application_id) ON DELETE CASCADE;

UPDATE provider_connections c
SET active = false, inactive_reason = 'another user of this application connected the same account',
    updated_at = now()
FROM (
    SELECT user_id, provider, row_number() OVER (
        PARTITION BY application_id, provider, provider_user_id ORDER BY updated_at DESC, user_id
    ) AS newest
    FROM provider_connections WHERE active
) d
WHERE d.newest > 1 AND c.user_id = d.user_id AND c.provider = d.provider;

-- Also what a webhook event looks its connections up by (provider, provider_user_id).
DROP INDEX provider_connections_upstream_idx;
CREATE INDEX provider_connections_upstream_idx ON provider_connections (provider, provider_user_id) WHERE active;
CREATE UNIQUE INDEX provider_connections_account_idx
    ON provider_connections (application_id, provider, provider_user_id) WHERE active;

-- An authorization may move the account from another user of the application (`move=true`).
ALTER TABLE oauth_states ADD COLUMN move boolean NOT NULL DEFAULT false;
