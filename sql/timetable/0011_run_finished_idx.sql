-- Issue 18: the console's charts read the runs of the last hour (engine.trends): the runs
-- that ended since then are found through this index, the open ones through
-- chain_run_open_idx, so the cost grows with the runs in the window, not with the history.
-- (The end of a run already changes an indexed column, status in chain_run_open_idx's
-- predicate, so this index costs one more index entry, not a lost HOT update.)
CREATE INDEX chain_run_finished_idx ON timetable.chain_run (finished_at);
