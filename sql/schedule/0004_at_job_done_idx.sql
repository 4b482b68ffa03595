-- Issue 18: finished one-time jobs by end time, for the console's activity chart
-- (engine.trends); cron runs use cron_run_finished_idx.
CREATE INDEX at_job_done_idx ON schedule.at_job (done_time) WHERE status = 'done';
