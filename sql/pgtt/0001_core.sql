-- pgtt: engine bookkeeping shared by every module.
-- The migration ledger (pgtt.schema_migration) is created by the migrator itself.

CREATE SCHEMA IF NOT EXISTS pgtt;

-- One row per running engine process (pgtt-tui worker / demo), refreshed by a heartbeat.
-- The console's sessions view reads it; an engine whose backend is gone from
-- pg_stat_activity is dead, whatever its heartbeat says.
CREATE TABLE pgtt.engine (
    engine_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_name  text        NOT NULL,
    backend_pid  integer     NOT NULL,
    host         text        NOT NULL DEFAULT '',
    os_pid       integer     NOT NULL DEFAULT 0,
    modules      text[]      NOT NULL DEFAULT '{}',
    version      text        NOT NULL DEFAULT '',
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz
);
CREATE INDEX engine_live_idx ON pgtt.engine (client_name) WHERE stopped_at IS NULL;
COMMENT ON TABLE pgtt.engine IS 'pgtt-tui: engines connected to this database (heartbeat every few seconds)';

-- An engine is alive while its registering backend is.
CREATE FUNCTION pgtt.engine_alive(p_backend_pid integer, p_started timestamptz)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                   WHERE pid = p_backend_pid AND backend_start <= p_started + interval '1 second')
$$;

CREATE VIEW pgtt.engine_status AS
SELECT e.*, (e.stopped_at IS NULL AND pgtt.engine_alive(e.backend_pid, e.started_at)) AS alive
FROM pgtt.engine e;
