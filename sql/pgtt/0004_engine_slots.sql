-- Issue 18: how many runs an engine can run at once (its timetable worker slots: cron +
-- interval workers), so the console can draw slot use (running / capacity) over time from
-- the rows of the engines that were alive then.  NULL: an engine that did not say.
ALTER TABLE pgtt.engine ADD COLUMN slots integer;
COMMENT ON COLUMN pgtt.engine.slots IS 'pgtt-tui: timetable worker slots of this engine (cron + interval workers)';
