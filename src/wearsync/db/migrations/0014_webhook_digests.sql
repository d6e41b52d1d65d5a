-- The SHA-256 of every webhook event's dedupe key, kept long after the event itself is pruned
-- (WEARSYNC_WEBHOOK_DIGEST_RETENTION_DAYS against WEARSYNC_WEBHOOK_EVENT_RETENTION_DAYS): Suunto's
-- and Polar's signed deliveries carry no timestamp, so one replayed after its event was pruned
-- would otherwise be taken again and revert what it names. About 80 bytes an event.
CREATE TABLE webhook_digests (
    provider     text NOT NULL,
    digest       bytea NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, digest)
);
CREATE INDEX webhook_digests_received_idx ON webhook_digests (received_at);
INSERT INTO webhook_digests (provider, digest, received_at)
SELECT provider, sha256(convert_to(dedupe_key, 'UTF8')), received_at FROM webhook_events
ON CONFLICT DO NOTHING;
