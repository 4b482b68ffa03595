-- pgq: table triggers that capture row changes into queues: pgq.logutriga(), pgq.sqltriga(),
-- pgq.jsontriga(). Part 4 of the pgq module. Plain PL/pgSQL, written from the documented
-- behaviour (reference/pgq_triggers.md); no code is taken from PgQ.
--
-- Compatibility target: PgQ 3.5's C triggers (what CREATE EXTENSION pgq installs). Where the
-- upstream C and PL variants differ (reference section 13) we follow C, namely:
--   SKIP only upper case, and an error in an AFTER trigger; ev_data= supported; _pgq_ev_data
--   and unknown _pgq_ev_* columns (error); whitespace-tolerant ignore=/pkey= lists; truncate
--   triggers refuse ignore/pkey/backup/expressions; statement-level I/U/D triggers refuse;
--   local role is a silent pass-through before any check; values are output-function text;
--   change test by the type's equality (text for arrays and types without one); changed magic
--   columns count as ignored; the C quirk of logutriga/jsontriga with an ignore list (a key
--   change right of the first changed column is not seen); sqltriga NULL key is an error;
--   sqltriga backup is the urlencoded OLD row; when= must be boolean and not NULL; override
--   text by output function; override expressions substitute column names case-sensitively
--   word by word (as C's tokenizer does); the first of a duplicated option wins; more than one
--   row from an override is an error; empty pkey= gives [""] in JSON.
--
-- Performance: the per-table work (columns, types, key, parsed options, the SQL that encodes a
-- row) is built once per session and trigger and kept in a session setting
-- (pgq_trg.<kind><table oid>_<hash of trigger name>). Every row checks it is still current with
-- one index lookup on pg_attribute (the xmin of the table's column rows and of its primary key
-- index's rows: any ADD/DROP/RENAME/ALTER COLUMN or primary key change gives new row versions).
-- jsontriga on tables of plain built-in types encodes with row_to_json() (no dynamic SQL);
-- everything else runs one EXECUTE of the cached encoder per row.

-- urlencoding as PgQ does it: A-Z a-z 0-9 _ . - kept, space as +, every other byte of the
-- database encoding as % and two lower-case hex digits.
CREATE FUNCTION pgq._urlencode(t text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF t !~ '[^A-Za-z0-9_. -]' THEN
        RETURN replace(t, ' ', '+');
    END IF;
    RETURN (SELECT string_agg(CASE WHEN m[1] IS NOT NULL THEN replace(m[1], ' ', '+')
                                   ELSE regexp_replace(encode(convert_to(m[2], pg_catalog.getdatabaseencoding()),
                                                              'hex'), '(..)', '%\1', 'g') END,
                              '' ORDER BY n)
              FROM regexp_matches(t, '([A-Za-z0-9_. -]+)|([^A-Za-z0-9_. -]+)', 'g') WITH ORDINALITY AS x(m, n));
END
$$;
COMMENT ON FUNCTION pgq._urlencode(text) IS 'pgtt-tui: urlencode as PgQ''s logutriga does (lower-case hex, space as +)';

-- Membership list of ignore=/pkey=: names separated by commas and/or white space.
CREATE FUNCTION pgq._trg_name_list(t text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(x), '{}') FROM regexp_split_to_table(t, '[,[:space:]]+') AS x WHERE x <> ''
$$;

-- Rewrite an override expression the way PgQ's C query builder does: every identifier-like
-- word (not part of a dotted name, outside strings, quoted identifiers and comments) that is
-- exactly (case-sensitively) a column name becomes the value of that column of the row ($1).
CREATE FUNCTION pgq._trg_rewrite(expr text, cols text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n integer := length(expr);
    i integer := 1;
    j integer;
    ch text;
    c2 text;
    tag text;
    w text;
    res text := '';
    esc boolean;
BEGIN
    WHILE i <= n LOOP
        ch := substr(expr, i, 1);
        IF ch = '''' OR (ch IN ('E', 'e') AND substr(expr, i + 1, 1) = ''''
                         AND (i = 1 OR substr(expr, i - 1, 1) !~ '[A-Za-z0-9_$]')) THEN
            esc := ch <> '''';
            j := i + CASE WHEN esc THEN 2 ELSE 1 END;
            LOOP
                IF j > n THEN
                    RAISE EXCEPTION 'QB: syntax error';
                END IF;
                c2 := substr(expr, j, 1);
                IF esc AND c2 = '\' THEN
                    j := j + 2;
                ELSIF c2 = '''' THEN
                    IF substr(expr, j + 1, 1) = '''' THEN
                        j := j + 2;
                    ELSE
                        EXIT;
                    END IF;
                ELSE
                    j := j + 1;
                END IF;
            END LOOP;
            res := res || substr(expr, i, j - i + 1);
            i := j + 1;
        ELSIF ch = '$' AND substr(expr, i + 1, 1) ~ '[0-9]' THEN
            w := substring(substr(expr, i) FROM '^\$[0-9]+');
            res := res || w;
            i := i + length(w);
        ELSIF ch = '$' THEN
            tag := substring(substr(expr, i) FROM '^\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$');
            IF tag IS NULL THEN
                RAISE EXCEPTION 'QB: syntax error';
            END IF;
            j := strpos(substr(expr, i + length(tag)), tag);
            IF j = 0 THEN
                RAISE EXCEPTION 'QB: syntax error';
            END IF;
            w := substr(expr, i, length(tag) * 2 + j - 1);
            res := res || w;
            i := i + length(w);
        ELSIF ch = '"' THEN
            j := strpos(substr(expr, i + 1), '"');
            IF j = 0 THEN
                RAISE EXCEPTION 'QB: syntax error';
            END IF;
            res := res || substr(expr, i, j + 1);
            i := i + j + 1;
        ELSIF ch = '-' AND substr(expr, i + 1, 1) = '-' THEN
            j := strpos(substr(expr, i), E'\n');
            IF j = 0 THEN
                j := n - i + 2;
            END IF;
            res := res || substr(expr, i, j - 1);
            i := i + j - 1;
        ELSIF ch = '/' AND substr(expr, i + 1, 1) = '*' THEN
            j := strpos(substr(expr, i + 2), '*/');
            IF j = 0 THEN
                RAISE EXCEPTION 'QB: syntax error';
            END IF;
            res := res || substr(expr, i, j + 3);
            i := i + j + 3;
        ELSIF ch ~ '[0-9]' THEN
            w := substring(substr(expr, i) FROM '^[0-9][0-9A-Za-z_.]*');
            res := res || w;
            i := i + length(w);
        ELSIF ch ~ '[A-Za-z_]' OR ascii(ch) > 127 THEN
            -- a word, or a dotted chain of words (never substituted)
            w := substring(substr(expr, i) FROM '^[[:alpha:]_][[:alnum:]_$]*(?:\.[[:alnum:]_$]+)*');
            IF w IS NULL OR w = '' THEN
                w := ch;
            END IF;
            IF strpos(w, '.') = 0 AND (i = 1 OR substr(expr, i - 1, 1) <> '.') AND w = ANY (cols) THEN
                res := res || format('($1).%I', w);
            ELSE
                res := res || w;
            END IF;
            i := i + length(w);
        ELSE
            res := res || ch;
            i := i + 1;
        END IF;
    END LOOP;
    RETURN res;
END
$$;

-- Build the per-table, per-trigger cache entry: two parts separated by chr(29), each a list of
-- fields separated by chr(30). Part 1 (read on every row):
--  1 fingerprint  2 trigger arguments  3 queue  4 flags  5 schema.table
--  6 unknown-magic-column error ('' if none)  7..10 ev_type for INSERT, UPDATE, DELETE, TRUNCATE
--  11 jsontriga fast path: regexp that quotes numeric values  12 key columns (table order) for the
--  fast UPDATE check  13 truncate error  14 fingerprint mode (r: the primary key is the replica
--  identity index, read from the relcache; i: look it up in pg_index).
-- Part 2 (read only when a row needs it): the encoder SQL for INSERT, UPDATE, DELETE.
-- Flags: S skip, B backup, D deny, K has a key, F/G jsontriga fast path for INSERT+DELETE/UPDATE.
CREATE FUNCTION pgq._trg_build(kind text, relid oid, args text[]) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    sep constant text := chr(30);
    args_text constant text := args::text;  -- as the trigger sees TG_ARGV (lower bound 0)
    queue text;
    arg text;
    o_skip boolean := false;
    o_backup boolean := false;
    o_deny boolean := false;
    o_ignore text;
    o_pkey text;
    o_expr text[] := ARRAY[NULL, NULL, NULL, NULL, NULL, NULL, NULL]::text[];  -- type,data,e1..e4,when
    expr_names constant text[] := ARRAY['ev_type=', 'ev_data=', 'ev_extra1=', 'ev_extra2=', 'ev_extra3=',
                                        'ev_extra4=', 'when='];
    k integer;
    matched boolean;
    nsp text;
    rel text;
    fqname text;
    pk_detected text[];
    pk_names text[];          -- for membership
    pk_json text;
    pk_type text;
    ign text[] := '{}';
    col record;
    cols text[] := '{}';
    magic_err text := '';
    magic_fields text[] := ARRAY[NULL, NULL, NULL, NULL, NULL, NULL]::text[];
    magic_names constant text[] := ARRAY['_pgq_ev_type', '_pgq_ev_data', '_pgq_ev_extra1', '_pgq_ev_extra2',
                                         '_pgq_ev_extra3', '_pgq_ev_extra4'];
    has_keys boolean;
    key_cols text[] := '{}';
    fast boolean;
    fast_upd boolean;
    numfix text[] := '{}';
    -- encoder pieces
    r1 text; r2 text; n1 text; n2 text; o1 text; o2 text; ch text;
    d_new text[] := '{}';   -- data elements from $1
    d_old text[] := '{}';   -- same encoding from $2 (backup)
    u_old text[] := '{}';   -- urlencoded $2 (sqltriga backup)
    ins_cols text[] := '{}';
    ins_vals text[] := '{}';
    set_list text[] := '{}';
    where_new text[] := '{}';  -- key condition from $1 (DELETE)
    where_old text[] := '{}';  -- key condition from $2 (UPDATE)
    nullkey1 text[] := '{}';
    nullkey2 text[] := '{}';
    fallback text;
    key_changed text[] := '{}';
    ign_changed text[] := '{}';
    scan text := '';
    chk text;
    data1 text; data2 text; bk text; url2 text;
    tail1 text; tail2 text;
    fields text[] := ARRAY['t', 'd', '1', '2', '3', '4'];
    flags text := '';
    q_ins text; q_upd text; q_del text;
    trunc_err text := '';
    f integer;
    out_sql text;
    fp text;
    fp_mode text;
BEGIN
    args := array(SELECT unnest(args));  -- TG_ARGV counts from 0
    queue := args[1];
    FOREACH arg IN ARRAY coalesce(args[2:], '{}') LOOP
        IF arg = 'SKIP' THEN
            o_skip := true;
        ELSIF arg = 'backup' THEN
            o_backup := true;
        ELSIF arg = 'deny' THEN
            o_deny := true;
        ELSIF arg LIKE 'ignore=%' THEN
            o_ignore := coalesce(o_ignore, substr(arg, 8));
        ELSIF arg LIKE 'pkey=%' THEN
            o_pkey := coalesce(o_pkey, substr(arg, 6));
        ELSE
            matched := false;
            FOR k IN 1 .. 7 LOOP
                IF left(arg, length(expr_names[k])) = expr_names[k] THEN
                    o_expr[k] := coalesce(o_expr[k], substr(arg, length(expr_names[k]) + 1));
                    matched := true;
                    EXIT;
                END IF;
            END LOOP;
            IF NOT matched THEN
                RAISE EXCEPTION 'bad param to pgq trigger';
            END IF;
        END IF;
    END LOOP;
    -- what a TRUNCATE trigger refuses (checked when it fires)
    IF o_ignore IS NOT NULL THEN
        trunc_err := 'Column ignore does not make sense for truncate trigger';
    ELSIF o_pkey IS NOT NULL THEN
        trunc_err := 'Custom pkey_list does not make sense for truncate trigger';
    ELSIF o_backup THEN
        trunc_err := 'Backup does not make sense for truncate trigger';
    ELSIF cardinality(array_remove(o_expr, NULL)) > 0 THEN
        trunc_err := 'Custom expressions do not make sense for truncater trigger';
    END IF;

    SELECT n.nspname, c.relname, CASE WHEN c.relreplident = 'd' THEN 'r' ELSE 'i' END INTO nsp, rel, fp_mode
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = relid;
    fqname := nsp || '.' || rel;
    -- the same expressions as in the trigger body
    IF fp_mode = 'r' THEN
        fp := array(SELECT a.xmin FROM pg_catalog.pg_attribute a
                     WHERE a.attrelid = relid AND a.attnum > 0 ORDER BY a.attnum)::text
              || coalesce(pg_catalog.pg_get_replica_identity_index(relid)::oid::text, '-');
    ELSE
        fp := array(SELECT a.xmin FROM pg_catalog.pg_attribute a
                     WHERE a.attrelid = relid AND a.attnum > 0 ORDER BY a.attnum)::text
              || coalesce((SELECT i.indexrelid::text FROM pg_catalog.pg_index i
                            WHERE i.indrelid = relid AND i.indisprimary), '-');
    END IF;

    -- primary key: the primary key index's own attributes, in index order
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO pk_detected
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indexrelid
     WHERE i.indrelid = relid AND i.indisprimary AND a.attnum > 0 AND NOT a.attisdropped;
    IF o_pkey IS NOT NULL THEN
        pk_names := pgq._trg_name_list(o_pkey);
        pk_type := o_pkey;
        SELECT string_agg(to_json(x)::text, ',' ORDER BY n) INTO pk_json
          FROM unnest(string_to_array(o_pkey, ',')) WITH ORDINALITY AS u(x, n);
        has_keys := o_pkey <> '';
        IF o_pkey = '' THEN
            pk_json := '""';  -- as PgQ's C trigger: [""]
        END IF;
    ELSE
        pk_names := coalesce(pk_detected, '{}');
        pk_type := array_to_string(pk_names, ',');
        SELECT string_agg(to_json(x)::text, ',' ORDER BY n) INTO pk_json
          FROM unnest(pk_names) WITH ORDINALITY AS u(x, n);
        has_keys := cardinality(pk_names) > 0;
    END IF;
    pk_json := coalesce(pk_json, '');
    IF o_ignore IS NOT NULL THEN
        ign := pgq._trg_name_list(o_ignore);
    END IF;

    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO cols
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = relid AND a.attnum > 0 AND NOT a.attisdropped;
    cols := coalesce(cols, '{}');

    fast := kind = 'j' AND o_ignore IS NULL AND cardinality(array_remove(o_expr, NULL)) = 0;
    fast_upd := fast;

    FOR col IN
        SELECT a.attname::text AS name, a.attnum, a.atttypid AS typ, t.typtype, t.typlen, t.typelem,
               t.typcategory,
               coalesce(bt.typtype, t.typtype) AS basetype_type,
               coalesce(bt.oid, t.oid) AS basetype
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
          LEFT JOIN LATERAL (
              WITH RECURSIVE d(oid, typtype, typbasetype, depth) AS (
                  SELECT t2.oid, t2.typtype, t2.typbasetype, 0 FROM pg_catalog.pg_type t2 WHERE t2.oid = t.typbasetype
                  UNION ALL
                  SELECT t3.oid, t3.typtype, t3.typbasetype, d.depth + 1
                    FROM d JOIN pg_catalog.pg_type t3 ON t3.oid = d.typbasetype WHERE d.typtype = 'd'
              )
              SELECT d.oid, d.typtype FROM d ORDER BY depth DESC LIMIT 1
          ) bt ON t.typtype = 'd'
         WHERE a.attrelid = relid AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
    LOOP
        r1 := format('($1).%I', col.name);
        r2 := format('($2).%I', col.name);
        IF col.basetype_type = 'c' THEN
            n1 := format('num_nulls(%s) = 1', r1);
            n2 := format('num_nulls(%s) = 1', r2);
        ELSE
            n1 := r1 || ' IS NULL';
            n2 := r2 || ' IS NULL';
        END IF;
        o1 := format('format(''%%s'', %s)', r1);
        o2 := format('format(''%%s'', %s)', r2);
        -- changed? the type's default equality; output text for arrays and types without one
        IF col.typcategory <> 'A' AND EXISTS (
            SELECT 1 FROM pg_catalog.pg_opclass oc JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod
             WHERE oc.opcdefault AND am.amname IN ('btree', 'hash')
               AND (oc.opcintype = col.basetype
                    OR oc.opcintype IN (SELECT c.casttarget FROM pg_catalog.pg_cast c
                                         WHERE c.castsource = col.basetype AND c.castmethod = 'b')
                    OR (oc.opcintype = 'pg_catalog.anyenum'::regtype AND col.basetype_type = 'e')
                    OR (oc.opcintype = 'pg_catalog.record'::regtype AND col.basetype_type = 'c')
                    OR (oc.opcintype = 'pg_catalog.anyrange'::regtype AND col.basetype_type = 'r'))) THEN
            ch := format('(%s IS DISTINCT FROM %s)', r1, r2);
        ELSE
            ch := format('(CASE WHEN %s THEN NOT (%s) WHEN %s THEN true ELSE %s <> %s END)', n1, n2, n2, o1, o2);
        END IF;

        IF col.name LIKE '\_pgq\_ev\_%' THEN
            f := array_position(magic_names, col.name);
            IF f IS NULL THEN
                IF magic_err = '' THEN
                    magic_err := 'Unknown magic column: ' || col.name;
                END IF;
            ELSE
                magic_fields[f] := format('ARRAY[CASE WHEN %s THEN NULL ELSE %s END]', n1, o1);
            END IF;
            fast := false;
            fast_upd := false;
            ign_changed := ign_changed || ch;
            CONTINUE;
        END IF;
        IF col.name = ANY (ign) THEN
            ign_changed := ign_changed || ch;
            CONTINUE;
        END IF;

        -- encodings of this column
        IF kind = 'j' THEN
            d_new := d_new || format('%L || CASE WHEN %s THEN ''null'' ELSE %s END', to_json(col.name)::text || ':', n1,
                CASE WHEN col.typ = 'pg_catalog.bool'::regtype THEN format('CASE WHEN %s THEN ''true'' ELSE ''false'' END', r1)
                     WHEN col.typ IN ('pg_catalog.int2'::regtype, 'pg_catalog.int4'::regtype, 'pg_catalog.int8'::regtype)
                          THEN r1 || '::text'
                     WHEN col.typ IN ('pg_catalog.date'::regtype, 'pg_catalog.timestamp'::regtype,
                                      'pg_catalog.timestamptz'::regtype) THEN format('to_json(%s)::text', r1)
                     ELSE format('to_json(%s)::text', o1) END);
            d_old := d_old || replace(d_new[cardinality(d_new)], '($1).', '($2).');
            -- row_to_json() gives the same text for plain built-in types, numbers aside
            IF col.typ IN ('pg_catalog.numeric'::regtype, 'pg_catalog.float4'::regtype, 'pg_catalog.float8'::regtype) THEN
                numfix := numfix || regexp_replace(to_json(col.name)::text, '([^A-Za-z0-9_])', '\\\1', 'g');
            ELSIF NOT (col.typ < 16384 AND col.typtype IN ('b', 'r')
                       AND NOT (col.typlen = -1 AND col.typelem <> 0)
                       AND col.typ NOT IN ('pg_catalog.json'::regtype, 'pg_catalog.jsonb'::regtype)) THEN
                fast := false;
                fast_upd := false;
            END IF;
        ELSE
            d_new := d_new || format('%L || CASE WHEN %s THEN '''' ELSE ''='' || pgq._urlencode(%s) END',
                                     pgq._urlencode(col.name), n1, o1);
            d_old := d_old || replace(d_new[cardinality(d_new)], '($1).', '($2).');
        END IF;
        IF kind = 's' THEN
            ins_cols := ins_cols || quote_ident(col.name);
            ins_vals := ins_vals || format('CASE WHEN %s THEN ''null'' ELSE quote_literal(%s) END', n1, o1);
        END IF;

        IF col.name = ANY (pk_names) THEN
            key_cols := key_cols || col.name;
            key_changed := key_changed || ch;
            where_new := where_new || format('%L || quote_literal(%s)', quote_ident(col.name) || '=', o1);
            where_old := where_old || format('%L || quote_literal(%s)', quote_ident(col.name) || '=', o2);
            nullkey1 := nullkey1 || n1;
            nullkey2 := nullkey2 || n2;
            IF fallback IS NULL THEN
                fallback := format('%L || quote_literal(%s)', quote_ident(col.name) || '=', o2);
            END IF;
            scan := scan || format(' WHEN %s THEN ''pk''', ch);
            IF NOT (col.typ IN ('pg_catalog.int2'::regtype, 'pg_catalog.int4'::regtype, 'pg_catalog.int8'::regtype,
                                'pg_catalog.numeric'::regtype, 'pg_catalog.text'::regtype, 'pg_catalog.varchar'::regtype,
                                'pg_catalog.bpchar'::regtype, 'pg_catalog.uuid'::regtype, 'pg_catalog.bool'::regtype,
                                'pg_catalog.date'::regtype, 'pg_catalog.timestamp'::regtype,
                                'pg_catalog.timestamptz'::regtype, 'pg_catalog.oid'::regtype)) THEN
                fast_upd := false;
            END IF;
        ELSE
            scan := scan || format(' WHEN %s THEN ''ok''', ch);
            IF kind = 's' THEN
                set_list := set_list || format('CASE WHEN %s THEN %L || CASE WHEN %s THEN ''NULL'' ELSE quote_literal(%s) END END',
                                               ch, quote_ident(col.name) || '=', n1, o1);
            END IF;
        END IF;
    END LOOP;

    IF kind <> 'j' OR NOT fast THEN
        fast := false;
        fast_upd := false;
    END IF;

    -- the override / magic / when part, common to all encoders
    tail1 := '';
    FOR f IN 1 .. 6 LOOP
        tail1 := tail1 || ', ' || coalesce(magic_fields[f], 'NULL::text[]') || ' AS m' || fields[f];
    END LOOP;
    FOR f IN 1 .. 6 LOOP
        IF o_expr[f] IS NULL THEN
            tail1 := tail1 || ', NULL::text[] AS o' || fields[f];
        ELSE
            tail1 := tail1 || format(', (SELECT coalesce(array_agg(CASE WHEN num_nulls(x) = 1 THEN NULL ELSE format(''%%s'', x) END), ''{}'') FROM (SELECT (%s) AS x) s) AS o%s',
                                     pgq._trg_rewrite(o_expr[f], cols), fields[f]);
        END IF;
    END LOOP;
    IF o_expr[7] IS NULL THEN
        tail1 := tail1 || ', NULL::text[] AS ow';
    ELSE
        tail1 := tail1 || format(', (SELECT coalesce(array_agg(pg_typeof(x)::oid::text || CASE WHEN num_nulls(x) = 1 THEN '''' ELSE '':'' || format(''%%s'', x) END), ''{}'') FROM (SELECT (%s) AS x) s) AS ow',
                                 pgq._trg_rewrite(o_expr[7], cols));
    END IF;

    IF kind = 'j' THEN
        data1 := '''{'' || concat_ws('','', ' || coalesce(array_to_string(d_new, ', '), '') || ') || ''}''';
        data2 := '''{'' || concat_ws('','', ' || coalesce(array_to_string(d_old, ', '), '') || ') || ''}''';
        IF cardinality(d_new) = 0 THEN
            data1 := '''{}''';
            data2 := '''{}''';
        END IF;
    ELSE
        data1 := CASE WHEN cardinality(d_new) = 0 THEN '''''' ELSE 'concat_ws(''&'', ' || array_to_string(d_new, ', ') || ')' END;
        data2 := CASE WHEN cardinality(d_old) = 0 THEN '''''' ELSE 'concat_ws(''&'', ' || array_to_string(d_old, ', ') || ')' END;
    END IF;
    url2 := data2;  -- logutriga encoding of $2; for sqltriga the backup is urlencoded too
    IF kind = 's' THEN
        -- the urlencoded OLD row, for backup
        url2 := CASE WHEN cardinality(d_old) = 0 THEN '''''' ELSE 'concat_ws(''&'', ' || array_to_string(d_old, ', ') || ')' END;
    END IF;
    bk := CASE WHEN o_backup THEN url2 ELSE 'NULL::text' END;

    IF kind = 's' THEN
        q_ins := format('SELECT %s AS d, NULL::text AS bk, ''ok'' AS chk, false AS igc, NULL::text AS wh, NULL::text AS fb%s',
                        CASE WHEN cardinality(ins_cols) = 0 THEN '''() values ()'''
                             ELSE format('%L || concat_ws('','', %s) || '')''',
                                         '(' || array_to_string(ins_cols, ',') || ') values (',
                                         array_to_string(ins_vals, ', ')) END, tail1);
        chk := format('CASE WHEN %s THEN ''pk'' WHEN %s THEN ''nullkey'' ELSE ''ok'' END',
                      coalesce(array_to_string(key_changed, ' OR '), 'false'),
                      coalesce(nullif(array_to_string(nullkey2, ' OR '), ''), 'false'));
        q_upd := format('SELECT %s AS d, %s AS bk, %s AS chk, %s AS igc, %s AS wh, %s AS fb%s',
                        CASE WHEN cardinality(set_list) = 0 THEN '''''' ELSE 'concat_ws('','', ' || array_to_string(set_list, ', ') || ')' END,
                        bk, chk,
                        coalesce(nullif(array_to_string(ign_changed, ' OR '), ''), 'false'),
                        CASE WHEN cardinality(where_old) = 0 THEN '''''' ELSE 'concat_ws('' and '', ' || array_to_string(where_old, ', ') || ')' END,
                        coalesce(fallback, ''''''), tail1);
        q_del := format('SELECT %s AS d, NULL::text AS bk, CASE WHEN %s THEN ''nullkey'' ELSE ''ok'' END AS chk, false AS igc, NULL::text AS wh, NULL::text AS fb%s',
                        CASE WHEN cardinality(where_new) = 0 THEN '''''' ELSE 'concat_ws('' and '', ' || array_to_string(where_new, ', ') || ')' END,
                        coalesce(nullif(array_to_string(nullkey1, ' OR '), ''), 'false'), tail1);
    ELSE
        IF o_ignore IS NULL THEN
            chk := format('CASE WHEN %s THEN ''pk'' ELSE ''ok'' END', coalesce(nullif(array_to_string(key_changed, ' OR '), ''), 'false'));
        ELSE
            chk := 'CASE' || scan || format(' WHEN %s THEN ''skip'' ELSE ''ok'' END',
                                            coalesce(nullif(array_to_string(ign_changed, ' OR '), ''), 'false'));
        END IF;
        q_ins := format('SELECT %s AS d, NULL::text AS bk, ''ok'' AS chk, false AS igc, NULL::text AS wh, NULL::text AS fb%s', data1, tail1);
        q_upd := format('SELECT %s AS d, %s AS bk, %s AS chk, false AS igc, NULL::text AS wh, NULL::text AS fb%s',
                        data1, CASE WHEN o_backup THEN data2 ELSE 'NULL::text' END, chk, tail1);
        q_del := q_ins;  -- $1 is OLD for a DELETE
    END IF;

    IF o_skip THEN flags := flags || 'S'; END IF;
    IF o_backup THEN flags := flags || 'B'; END IF;
    IF o_deny THEN flags := flags || 'D'; END IF;
    IF has_keys THEN flags := flags || 'K'; END IF;
    IF fast THEN flags := flags || 'F'; END IF;
    IF fast_upd THEN flags := flags || 'G'; END IF;

    out_sql := concat_ws(sep,
        fp, args_text, queue, flags, fqname, magic_err,
        CASE kind WHEN 'j' THEN format('{"op":"INSERT","table":[%s,%s],"pkey":[%s]}', to_json(nsp), to_json(rel), pk_json)
                  WHEN 'u' THEN 'I:' || pk_type ELSE 'I' END,
        CASE kind WHEN 'j' THEN format('{"op":"UPDATE","table":[%s,%s],"pkey":[%s]}', to_json(nsp), to_json(rel), pk_json)
                  WHEN 'u' THEN 'U:' || pk_type ELSE 'U' END,
        CASE kind WHEN 'j' THEN format('{"op":"DELETE","table":[%s,%s],"pkey":[%s]}', to_json(nsp), to_json(rel), pk_json)
                  WHEN 'u' THEN 'D:' || pk_type ELSE 'D' END,
        CASE kind WHEN 'j' THEN format('{"op":"TRUNCATE","table":[%s,%s],"pkey":[%s]}', to_json(nsp), to_json(rel), pk_json)
                  ELSE 'R' END,
        CASE WHEN cardinality(numfix) = 0 THEN ''
             ELSE '([{,]' || '(?:' || array_to_string(numfix, '|') || '):)([^",}]+)' END,
        key_cols::text, trunc_err, fp_mode);
    RETURN out_sql || chr(29) || concat_ws(sep, q_ins, q_upd, q_del);
END
$$;

-- The three trigger functions share one body; %KIND% is j (jsontriga), u (logutriga), s (sqltriga).
DO $make$
DECLARE
    body constant text := $tpl$
CREATE OR REPLACE FUNCTION pgq.%NAME%() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    c text[];
    sqls text[];
    s text;
    fp text;
    k text;
    flags text;
    op text := TG_OP;
    ev_type text;
    ev_data text;
    e2 text;
    e3 text;
    e4 text;
    e1 text;
    r record;
    nj jsonb;
    oj jsonb;
    kc text;
    w text;
    emit boolean := true;
BEGIN
    -- session_replication_role = local: pass the row through, no checks at all
    IF current_setting('session_replication_role') = 'local' THEN
        IF TG_WHEN = 'BEFORE' AND TG_LEVEL = 'ROW' THEN
            IF op = 'DELETE' THEN
                RETURN OLD;
            END IF;
            RETURN NEW;
        END IF;
        RETURN NULL;
    END IF;
    IF TG_LEVEL <> 'ROW' AND op <> 'TRUNCATE' THEN
        RAISE EXCEPTION 'pgq Ins/Upd/Del trigger must be fired FOR EACH ROW';
    END IF;
    IF TG_NARGS = 0 THEN
        RAISE EXCEPTION 'pgq trigger must have destination queue as argument';
    END IF;

    -- the session cache (see the top of sql/pgq/0004_triggers.sql), checked against the catalogs
    k := 'pgq_trg.%KIND%' || TG_RELID || '_' || to_hex(hashtext(TG_NAME));
    s := current_setting(k, true);
    IF s <> '' THEN
        c := string_to_array(s, chr(30));
        IF c[14] = 'r' THEN
            fp := array(SELECT a.xmin FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = TG_RELID AND a.attnum > 0 ORDER BY a.attnum)::text
                  || coalesce(pg_catalog.pg_get_replica_identity_index(TG_RELID)::oid::text, '-');
        ELSE
            fp := array(SELECT a.xmin FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = TG_RELID AND a.attnum > 0 ORDER BY a.attnum)::text
                  || coalesce((SELECT i.indexrelid::text FROM pg_catalog.pg_index i
                                WHERE i.indrelid = TG_RELID AND i.indisprimary), '-');
        END IF;
        IF c[1] <> fp OR c[2] <> TG_ARGV::text THEN
            c := NULL;
        END IF;
    END IF;
    IF c IS NULL THEN
        s := pgq._trg_build('%KIND%', TG_RELID, TG_ARGV);
        c := string_to_array(split_part(s, chr(29), 1), chr(30));
        sqls := string_to_array(split_part(s, chr(29), 2), chr(30));
        IF strpos(TG_ARGV::text, chr(30)) = 0 AND strpos(TG_ARGV::text, chr(29)) = 0 THEN
            PERFORM set_config(k, split_part(s, chr(29), 1), false);
            PERFORM set_config(k || 's', split_part(s, chr(29), 2), false);
        END IF;
    END IF;
    flags := c[4];

    IF op = 'TRUNCATE' THEN
        IF c[13] <> '' THEN
            RAISE EXCEPTION '%', c[13];
        END IF;
    ELSIF op <> 'INSERT' AND strpos(flags, 'K') = 0 THEN
        RAISE EXCEPTION 'Update/Delete on table without pkey';
    END IF;
    IF TG_WHEN = 'AFTER' AND strpos(flags, 'S') > 0 THEN
        RAISE EXCEPTION 'SKIP does not work in AFTER trigger.';
    END IF;
    IF strpos(flags, 'D') > 0 THEN
        RAISE EXCEPTION 'Table ''%'' to queue ''%'': change not allowed (%)', c[5], c[3], op;
    END IF;
    e1 := c[5];

    IF op = 'TRUNCATE' THEN
        PERFORM pgq.insert_event(c[3], c[10], %TRUNCDATA%, e1, NULL, NULL, NULL);
        RETURN NULL;
    END IF;

    IF op = 'INSERT' THEN
        ev_type := c[7];
    ELSIF op = 'UPDATE' THEN
        ev_type := c[8];
    ELSE
        ev_type := c[9];
    END IF;

    IF strpos(flags, CASE WHEN op = 'UPDATE' THEN 'G' ELSE 'F' END) > 0 THEN
        -- jsontriga, plain built-in column types: row_to_json() renders them as PgQ does
        IF op = 'UPDATE' THEN
            IF c[12] <> '{}' THEN
                nj := to_jsonb(NEW);
                oj := to_jsonb(OLD);
                FOREACH kc IN ARRAY c[12]::text[] LOOP
                    IF (nj -> kc) IS DISTINCT FROM (oj -> kc) THEN
                        RAISE EXCEPTION 'primary key update not allowed';
                    END IF;
                END LOOP;
            END IF;
            ev_data := row_to_json(NEW)::text;
            IF strpos(flags, 'B') > 0 THEN
                e2 := row_to_json(OLD)::text;
            END IF;
        ELSIF op = 'INSERT' THEN
            ev_data := row_to_json(NEW)::text;
        ELSE
            ev_data := row_to_json(OLD)::text;
        END IF;
        IF c[11] <> '' THEN
            ev_data := regexp_replace(ev_data, c[11], '\1"\2"', 'g');
            IF e2 IS NOT NULL THEN
                e2 := regexp_replace(e2, c[11], '\1"\2"', 'g');
            END IF;
        END IF;
    ELSE
        IF sqls IS NULL THEN
            sqls := string_to_array(current_setting(k || 's'), chr(30));
        END IF;
        IF op = 'INSERT' THEN
            EXECUTE sqls[1] INTO r USING NEW;
        ELSIF op = 'UPDATE' THEN
            EXECUTE sqls[2] INTO r USING NEW, OLD;
        ELSE
            EXECUTE sqls[3] INTO r USING OLD;
        END IF;
        IF r.chk <> 'ok' THEN
            IF r.chk = 'pk' THEN
                RAISE EXCEPTION 'primary key update not allowed';
            ELSIF r.chk = 'nullkey' THEN
                RAISE EXCEPTION 'logtriga: Unexpected NULL key value';
            END IF;
            emit := false;  -- 'skip': only ignored columns changed
        END IF;
        ev_data := r.d;
        IF emit AND '%KIND%' = 's' AND op = 'UPDATE' THEN
            IF ev_data = '' THEN
                IF r.igc THEN
                    emit := false;
                ELSE
                    ev_data := r.fb;
                END IF;
            END IF;
            ev_data := ev_data || ' where ' || r.wh;
        END IF;
        e2 := r.bk;
        IF emit THEN
            IF c[6] <> '' THEN
                RAISE EXCEPTION '%', c[6];
            END IF;
            -- magic columns, then expression overrides (ev_type, ev_data, ev_extra1..4, when)
            IF r.mt IS NOT NULL THEN ev_type := r.mt[1]; END IF;
            IF r.md IS NOT NULL THEN ev_data := r.md[1]; END IF;
            IF r.m1 IS NOT NULL THEN e1 := r.m1[1]; END IF;
            IF r.m2 IS NOT NULL THEN e2 := r.m2[1]; END IF;
            IF r.m3 IS NOT NULL THEN e3 := r.m3[1]; END IF;
            IF r.m4 IS NOT NULL THEN e4 := r.m4[1]; END IF;
            IF r.ot IS NOT NULL THEN
                IF cardinality(r.ot) <> 1 THEN RAISE EXCEPTION 'Expect 1 row from override query, got %', cardinality(r.ot); END IF;
                ev_type := r.ot[1];
            END IF;
            IF r.od IS NOT NULL THEN
                IF cardinality(r.od) <> 1 THEN RAISE EXCEPTION 'Expect 1 row from override query, got %', cardinality(r.od); END IF;
                ev_data := r.od[1];
            END IF;
            IF r.o1 IS NOT NULL THEN
                IF cardinality(r.o1) <> 1 THEN RAISE EXCEPTION 'Expect 1 row from override query, got %', cardinality(r.o1); END IF;
                e1 := r.o1[1];
            END IF;
            IF r.o2 IS NOT NULL THEN
                IF cardinality(r.o2) <> 1 THEN RAISE EXCEPTION 'Expect 1 row from override query, got %', cardinality(r.o2); END IF;
                e2 := r.o2[1];
            END IF;
            IF r.o3 IS NOT NULL THEN
                IF cardinality(r.o3) <> 1 THEN RAISE EXCEPTION 'Expect 1 row from override query, got %', cardinality(r.o3); END IF;
                e3 := r.o3[1];
            END IF;
            IF r.o4 IS NOT NULL THEN
                IF cardinality(r.o4) <> 1 THEN RAISE EXCEPTION 'Expect 1 row from override query, got %', cardinality(r.o4); END IF;
                e4 := r.o4[1];
            END IF;
            IF r.ow IS NOT NULL THEN
                IF cardinality(r.ow) <> 1 THEN RAISE EXCEPTION 'Expect 1 row from override query, got %', cardinality(r.ow); END IF;
                w := r.ow[1];
                IF split_part(w, ':', 1) <> '16' THEN
                    RAISE EXCEPTION 'when= query result must be boolean, got=%', split_part(w, ':', 1);
                END IF;
                IF strpos(w, ':') = 0 THEN
                    RAISE EXCEPTION 'when= should not be NULL';
                END IF;
                emit := w = '16:t';
            END IF;
        END IF;
    END IF;

    IF emit THEN
        PERFORM pgq.insert_event(c[3], ev_type, ev_data, e1, e2, e3, e4);
    END IF;
    IF strpos(flags, 'S') > 0 OR TG_WHEN = 'AFTER' THEN
        RETURN NULL;
    END IF;
    IF op = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$fn$;
$tpl$;
BEGIN
    EXECUTE replace(replace(replace(body, '%NAME%', 'jsontriga'), '%KIND%', 'j'), '%TRUNCDATA%', '''{}''');
    EXECUTE replace(replace(replace(body, '%NAME%', 'logutriga'), '%KIND%', 'u'), '%TRUNCDATA%', '''''');
    EXECUTE replace(replace(replace(body, '%NAME%', 'sqltriga'), '%KIND%', 's'), '%TRUNCDATA%', '''''');
END
$make$;

COMMENT ON FUNCTION pgq.jsontriga() IS
'pgtt-tui (PgQ-compatible): row/truncate trigger queueing changes as JSON. Args: queue, then SKIP, backup, deny, ignore=cols, pkey=cols, ev_type=/ev_data=/ev_extra1..4=expr, when=expr';
COMMENT ON FUNCTION pgq.logutriga() IS
'pgtt-tui (PgQ-compatible): row/truncate trigger queueing changes as urlencoded rows (ev_type I:/U:/D:pkey, R). Args as pgq.jsontriga';
COMMENT ON FUNCTION pgq.sqltriga() IS
'pgtt-tui (PgQ-compatible): row/truncate trigger queueing changes as partial SQL (ev_type I/U/D/R). Args as pgq.jsontriga';

-- As PgQ grants them: the trigger functions belong to pgq_writer. The helpers run inside the
-- triggers as the writing role, so they stay executable by everyone.
REVOKE ALL ON FUNCTION pgq.jsontriga(), pgq.logutriga(), pgq.sqltriga() FROM public;
GRANT EXECUTE ON FUNCTION pgq.jsontriga(), pgq.logutriga(), pgq.sqltriga() TO pgq_writer;
