-- The read API pages each kind of data in (time, id) order, a page starting strictly after the
-- previous page's last row: with the id in the index, a page is one range scan of it, rows that
-- share a time included. These replace the (user_id, time) indexes, which they cover.
DROP INDEX workouts_user_time_idx;
CREATE INDEX workouts_user_time_id_idx ON workouts (user_id, start_time, id);
DROP INDEX sleep_sessions_user_time_idx;
CREATE INDEX sleep_sessions_user_time_id_idx ON sleep_sessions (user_id, start_time, id);
DROP INDEX recoveries_user_time_idx;
CREATE INDEX recoveries_user_time_id_idx ON recoveries (user_id, recorded_at, id);
DROP INDEX daily_activity_user_day_idx;
CREATE INDEX daily_activity_user_day_id_idx ON daily_activity (user_id, day, id);
