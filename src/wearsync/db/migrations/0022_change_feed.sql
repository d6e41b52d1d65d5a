-- The change feed (`order=changes` on every data list, db/changes.py). Each data row names the
-- transaction that last wrote it (change_xid: PostgreSQL's 64-bit transaction id, which never
-- wraps around) and a number no other write has (change_seq): set on insert by the columns'
-- defaults, on update by a trigger, so every way of writing a row counts. A feed page reads rows in
-- (change_xid, change_seq) order, only those of transactions older than the oldest still running:
-- those have all ended, so a row committed late is never behind a cursor already given out.
-- The sequence's values only break ties within one transaction, so a per-session cache is fine.
-- Adding the columns rewrites each table once.
CREATE SEQUENCE data_change_seq AS bigint CACHE 1000;

CREATE FUNCTION data_row_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_xid := pg_current_xact_id();
    NEW.change_seq := nextval('data_change_seq');
    RETURN NEW;
END
$$;

ALTER TABLE workouts
    ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN change_seq bigint NOT NULL DEFAULT nextval('data_change_seq');
ALTER TABLE sleep_sessions
    ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN change_seq bigint NOT NULL DEFAULT nextval('data_change_seq');
ALTER TABLE recoveries
    ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN change_seq bigint NOT NULL DEFAULT nextval('data_change_seq');
ALTER TABLE daily_activity
    ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN change_seq bigint NOT NULL DEFAULT nextval('data_change_seq');
ALTER TABLE samples
    ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN change_seq bigint NOT NULL DEFAULT nextval('data_change_seq');

CREATE TRIGGER workouts_changed BEFORE UPDATE ON workouts
    FOR EACH ROW EXECUTE FUNCTION data_row_changed();
CREATE TRIGGER sleep_sessions_changed BEFORE UPDATE ON sleep_sessions
    FOR EACH ROW EXECUTE FUNCTION data_row_changed();
CREATE TRIGGER recoveries_changed BEFORE UPDATE ON recoveries
    FOR EACH ROW EXECUTE FUNCTION data_row_changed();
CREATE TRIGGER daily_activity_changed BEFORE UPDATE ON daily_activity
    FOR EACH ROW EXECUTE FUNCTION data_row_changed();
CREATE TRIGGER samples_changed BEFORE UPDATE ON samples
    FOR EACH ROW EXECUTE FUNCTION data_row_changed();

-- A feed page is one range scan: a user's rows (samples: of one type) in change order.
CREATE INDEX workouts_user_change_idx ON workouts (user_id, change_xid, change_seq);
CREATE INDEX sleep_sessions_user_change_idx ON sleep_sessions (user_id, change_xid, change_seq);
CREATE INDEX recoveries_user_change_idx ON recoveries (user_id, change_xid, change_seq);
CREATE INDEX daily_activity_user_change_idx ON daily_activity (user_id, change_xid, change_seq);
CREATE INDEX samples_user_type_change_idx ON samples (user_id, sample_type, change_xid, change_seq);
