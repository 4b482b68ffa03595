-- pgq: PgQ 3.5-compatible transactional queues, in plain SQL and PL/pgSQL.
-- Part 1: schema, roles, tables, sequences.
--
-- Public names, column names, types and defaults follow PgQ 3.5 (see
-- reference/pgq.md section a.2) so that existing producers, consumers and tools keep working.
-- Written from the documented behaviour; no code is taken from PgQ.

CREATE SCHEMA pgq;
COMMENT ON SCHEMA pgq IS 'pgtt-tui: PgQ 3.5-compatible transactional event queues (PL/pgSQL implementation)';

-- Roles are cluster-wide: create them only where missing. Two databases of one cluster may
-- install this module at the same time, so a concurrent creation is tolerated too.
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['pgq_reader', 'pgq_writer', 'pgq_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by another installation
            END;
        END IF;
    END LOOP;
    -- pgq_admin may do everything a reader and a writer may do.
    FOREACH r IN ARRAY ARRAY['pgq_reader', 'pgq_writer'] LOOP
        IF NOT pg_catalog.pg_has_role('pgq_admin', r, 'MEMBER') THEN
            BEGIN
                EXECUTE format('GRANT %I TO pgq_admin', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$roles$;

-- Consumer names.
CREATE TABLE pgq.consumer (
    co_id   serial,
    co_name text NOT NULL,
    CONSTRAINT consumer_pkey PRIMARY KEY (co_id),
    CONSTRAINT consumer_name_uq UNIQUE (co_name)
);

-- One row per queue: configuration and rotation state.
CREATE TABLE pgq.queue (
    queue_id                 serial,
    queue_name               text        NOT NULL,
    queue_ntables            integer     NOT NULL DEFAULT 3,
    queue_cur_table          integer     NOT NULL DEFAULT 0,
    queue_rotation_period    interval    NOT NULL DEFAULT '2 hours',
    queue_switch_step1       bigint      NOT NULL DEFAULT txid_current(),
    queue_switch_step2       bigint               DEFAULT txid_current(),
    queue_switch_time        timestamptz NOT NULL DEFAULT now(),
    queue_external_ticker    boolean     NOT NULL DEFAULT false,
    queue_disable_insert     boolean     NOT NULL DEFAULT false,
    queue_ticker_paused      boolean     NOT NULL DEFAULT false,
    queue_ticker_max_count   integer     NOT NULL DEFAULT 500,
    queue_ticker_max_lag     interval    NOT NULL DEFAULT '3 seconds',
    queue_ticker_idle_period interval    NOT NULL DEFAULT '1 minute',
    queue_per_tx_limit       integer,
    queue_data_pfx           text        NOT NULL,
    queue_event_seq          text        NOT NULL,
    queue_tick_seq           text        NOT NULL,
    queue_extra_maint        text[],
    CONSTRAINT queue_pkey PRIMARY KEY (queue_id),
    CONSTRAINT queue_name_uq UNIQUE (queue_name)
);

-- Ticks: transaction snapshots that cut the event stream into batches.
CREATE TABLE pgq.tick (
    tick_queue     integer       NOT NULL,
    tick_id        bigint        NOT NULL,
    tick_time      timestamptz   NOT NULL DEFAULT now(),
    tick_snapshot  txid_snapshot NOT NULL DEFAULT txid_current_snapshot(),
    tick_event_seq bigint        NOT NULL,
    CONSTRAINT tick_pkey PRIMARY KEY (tick_queue, tick_id),
    CONSTRAINT tick_queue_fkey FOREIGN KEY (tick_queue) REFERENCES pgq.queue (queue_id)
);

-- Global batch id source.
CREATE SEQUENCE pgq.batch_id_seq;

-- Consumer positions. sub_id is deliberately not unique (cooperative sub-consumers share it).
CREATE TABLE pgq.subscription (
    sub_id        serial      NOT NULL,
    sub_queue     integer     NOT NULL,
    sub_consumer  integer     NOT NULL,
    sub_last_tick bigint,
    sub_active    timestamptz NOT NULL DEFAULT now(),
    sub_batch     bigint,
    sub_next_tick bigint,
    CONSTRAINT subscription_pkey PRIMARY KEY (sub_queue, sub_consumer),
    CONSTRAINT subscription_batch_idx UNIQUE (sub_batch),
    CONSTRAINT sub_queue_fkey FOREIGN KEY (sub_queue) REFERENCES pgq.queue (queue_id),
    CONSTRAINT sub_consumer_fkey FOREIGN KEY (sub_consumer) REFERENCES pgq.consumer (co_id)
);

-- Shape of every event table; holds no rows itself.
CREATE TABLE pgq.event_template (
    ev_id     bigint      NOT NULL,
    ev_time   timestamptz NOT NULL,
    ev_txid   bigint      NOT NULL DEFAULT txid_current(),
    ev_owner  integer,
    ev_retry  integer,
    ev_type   text,
    ev_data   text,
    ev_extra1 text,
    ev_extra2 text,
    ev_extra3 text,
    ev_extra4 text
);

-- Events waiting to be retried, private to one consumer (ev_owner = sub_id).
CREATE TABLE pgq.retry_queue (
    ev_retry_after timestamptz NOT NULL,
    ev_queue       integer     NOT NULL,
    LIKE pgq.event_template,
    CONSTRAINT rq_pkey PRIMARY KEY (ev_owner, ev_id),
    CONSTRAINT rq_queue_id_fkey FOREIGN KEY (ev_queue) REFERENCES pgq.queue (queue_id)
);
ALTER TABLE pgq.retry_queue ALTER COLUMN ev_owner SET NOT NULL;
ALTER TABLE pgq.retry_queue ALTER COLUMN ev_txid DROP NOT NULL;
CREATE INDEX rq_retry_idx ON pgq.retry_queue (ev_retry_after);
