-- `wearsync tasks` lists the newest tasks across users (created_at newest first, then id). 0011's
-- index on created_at alone finds them, but then sorts the tasks sharing a time and reads every
-- task from the table to check --status and --provider. In the list's order and with status and
-- provider, the index gives the first entries as they are and checks those filters on them: only
-- the tasks listed are read. Pruning (db/retention.py) reads its range of old tasks from it too.
DROP INDEX sync_tasks_created_idx;
CREATE INDEX sync_tasks_created_idx ON sync_tasks (created_at DESC, id, status, provider);
-- The same columns as sync_tasks_user_idx (0001): one of the two is enough to keep up to date.
DROP INDEX sync_tasks_connection_recent_idx;
