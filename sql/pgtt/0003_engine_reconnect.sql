-- pgtt: an engine keeps its row in pgtt.engine when it reconnects (server restart, lost
-- connection): the row then names the new backend, and connected_at says since when it is
-- connected (NULL: since started_at).  The alive check guards against a reused pid with it.
ALTER TABLE pgtt.engine ADD COLUMN connected_at timestamptz;
COMMENT ON COLUMN pgtt.engine.connected_at IS 'when the engine''s current registering backend connected (NULL: at started_at)';

DROP VIEW pgtt.engine_status;
CREATE VIEW pgtt.engine_status AS
SELECT e.*, (e.stopped_at IS NULL AND pgtt.engine_alive(e.backend_pid, coalesce(e.connected_at, e.started_at))) AS alive
FROM pgtt.engine e;
