-- pgq: PgQ 3.5-compatible transactional queues.
-- Part 3: privileges, as PgQ grants them (reference/pgq.md section a.2):
--   public     reads the meta tables and the info functions;
--   pgq_reader consumes (register, batches, retries);
--   pgq_writer produces (insert_event, current_event_table; the trigger functions of
--              sql/pgq/0004_triggers.sql get their grant there);
--   pgq_admin  creates/drops queues, ticks and maintains (member of reader and writer).

GRANT USAGE ON SCHEMA pgq TO public;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgq FROM public;

GRANT EXECUTE ON FUNCTION
    pgq.seq_getval(text), pgq.get_queue_info(), pgq.get_queue_info(text),
    pgq.get_consumer_info(), pgq.get_consumer_info(text), pgq.get_consumer_info(text, text),
    pgq.quote_fqname(text), pgq.version()
TO public;

GRANT EXECUTE ON FUNCTION
    pgq.batch_event_sql(bigint), pgq.batch_event_tables(bigint),
    pgq.find_tick_helper(integer, bigint, timestamptz, bigint, bigint, interval),
    pgq.register_consumer(text, text), pgq.register_consumer_at(text, text, bigint),
    pgq.unregister_consumer(text, text),
    pgq.next_batch_info(text, text), pgq.next_batch(text, text),
    pgq.next_batch_custom(text, text, interval, integer, interval),
    pgq.get_batch_events(bigint), pgq.get_batch_info(bigint),
    pgq.get_batch_cursor(bigint, text, integer, text), pgq.get_batch_cursor(bigint, text, integer),
    pgq.event_retry(bigint, bigint, timestamptz), pgq.event_retry(bigint, bigint, integer),
    pgq.batch_retry(bigint, integer), pgq.force_tick(text), pgq.finish_batch(bigint)
TO pgq_reader;

GRANT EXECUTE ON FUNCTION
    pgq.insert_event(text, text, text), pgq.insert_event(text, text, text, text, text, text, text),
    pgq.current_event_table(text)
TO pgq_writer;

GRANT EXECUTE ON FUNCTION
    pgq.ticker(text, bigint, timestamptz, bigint), pgq.ticker(text), pgq.ticker(),
    pgq.maint_retry_events(), pgq.maint_rotate_tables_step1(text), pgq.maint_rotate_tables_step2(),
    pgq.maint_tables_to_vacuum(), pgq.maint_operations(),
    pgq.upgrade_schema(), pgq.grant_perms(text), pgq._grant_perms_from(text, text, text, text),
    pgq.tune_storage(text), pgq.seq_setval(text, bigint),
    pgq.create_queue(text), pgq.drop_queue(text, boolean), pgq.drop_queue(text),
    pgq.set_queue_config(text, text, text),
    pgq.insert_event_raw(text, bigint, timestamptz, integer, integer, text, text, text, text, text, text),
    pgq.event_retry_raw(text, text, timestamptz, bigint, timestamptz, integer, text, text, text, text, text, text)
TO pgq_admin;

REVOKE ALL ON TABLE pgq.event_template, pgq.consumer, pgq.queue, pgq.tick, pgq.subscription, pgq.retry_queue
FROM public;
GRANT SELECT ON TABLE pgq.event_template TO pgq_reader;
GRANT SELECT, INSERT, TRUNCATE ON TABLE pgq.event_template TO pgq_admin;
GRANT SELECT ON TABLE pgq.consumer, pgq.queue, pgq.tick, pgq.subscription TO public;
GRANT SELECT ON TABLE pgq.consumer, pgq.queue, pgq.tick, pgq.subscription TO pgq_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE pgq.consumer, pgq.queue, pgq.tick, pgq.subscription TO pgq_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE pgq.retry_queue TO pgq_admin;
