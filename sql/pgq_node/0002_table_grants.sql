-- pgq_node: the table grants of the real extension (pgq-node's grants.ini, "tables"): the
-- pgq roles may read the node tables (pgq_admin may also change them), as with
-- CREATE EXTENSION pgq_node.  0001 granted only the functions, so a pgq_reader member could
-- call pgq_node.get_node_info() but not SELECT from pgq_node.node_info, unlike upstream
-- (tests/test_cascade_real_ext.py compares the table privileges with the extension's).
-- The roles are pgq's (sql/pgq); as in 0001, a role that does not exist is skipped.
DO $$
DECLARE
    tables text := 'pgq_node.node_location, pgq_node.node_info, pgq_node.local_state, pgq_node.subscriber_info';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgq_reader') THEN
        EXECUTE format('GRANT SELECT ON TABLE %s TO pgq_reader', tables);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgq_writer') THEN
        EXECUTE format('GRANT SELECT ON TABLE %s TO pgq_writer', tables);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgq_admin') THEN
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO pgq_admin', tables);
    END IF;
END;
$$;
