-- The arq job that carries a task now, when it is not the task's own id (a task continued in a
-- new job, or enqueued again by the reaper): how the reaper tells a live job from a lost one.
ALTER TABLE sync_tasks ADD COLUMN job_id text;
CREATE INDEX sync_tasks_running_idx ON sync_tasks (updated_at) WHERE status = 'running';
