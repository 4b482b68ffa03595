-- Issue 18: history for the queue and cascade charts.  PgQ keeps no lag history, so the
-- engine samples it: the pgq ticker (engine/pgq/ticker.py) writes one row per queue
-- (consumer_name '') and one per consumer at most every sample period (10 s) per queue,
-- the cascade worker (engine/cascade/worker.py) one row per node and queue into the node's
-- own database; the ticker's maintenance prunes rows older than the retention (24 h).
-- A database whose ticker is not ours (pgqd) has no rows: the console then samples what it
-- sees while the view is open.
CREATE TABLE pgtt.queue_sample (
    queue_name    text NOT NULL,
    consumer_name text NOT NULL DEFAULT '',
    sampled_at    timestamptz NOT NULL,
    ev_per_sec    double precision,
    lag_s         double precision,
    pending       bigint,
    tick_id       bigint,
    PRIMARY KEY (queue_name, consumer_name, sampled_at)
);
CREATE INDEX queue_sample_at_idx ON pgtt.queue_sample (sampled_at);
COMMENT ON TABLE pgtt.queue_sample IS
    'pgtt-tui: queue throughput (consumer_name empty) and consumer lag over time, sampled by the ticker';

CREATE TABLE pgtt.cascade_sample (
    queue_name text NOT NULL,
    node_name  text NOT NULL,
    sampled_at timestamptz NOT NULL,
    tick_id    bigint,
    lag_s      double precision,
    PRIMARY KEY (queue_name, node_name, sampled_at)
);
CREATE INDEX cascade_sample_at_idx ON pgtt.cascade_sample (sampled_at);
COMMENT ON TABLE pgtt.cascade_sample IS
    'pgtt-tui: a cascade node''s lag behind the root (seconds since the completed tick was made), sampled by its worker';
