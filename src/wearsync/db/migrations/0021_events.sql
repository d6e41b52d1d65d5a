-- The event log, also the outbox of outgoing webhooks: each event is written in the transaction
-- of the change it reports (a task's end, a page of records, a connection made or lost), so no
-- change is stored without its event, and no event without its change. `id` orders the log (the
-- stream's position); `public_id` is what integrators see (the `webhook-id` header); `user_id` is
-- the user's id as the API shows it; `tx` is the writing transaction, for readers that must not
-- pass an event committed after a later id (pg_snapshot_xmin).
CREATE TABLE events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id       text NOT NULL DEFAULT 'evt_' || replace(gen_random_uuid()::text, '-', ''),
    application_id  uuid NOT NULL REFERENCES applications ON DELETE CASCADE,
    user_id         uuid,
    type            text NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    tx              xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE UNIQUE INDEX events_public_id_idx ON events (public_id);
CREATE INDEX events_application_idx ON events (application_id, id);
CREATE INDEX events_application_time_idx ON events (application_id, created_at);
