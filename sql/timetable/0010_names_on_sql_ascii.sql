-- timetable 0010: the name check of 0007 on SQL_ASCII databases.
--
-- A SQL_ASCII database stores the client's bytes as they come and sees every byte as one
-- character, so the UTF-8 form of any non-ASCII letter (its continuation bytes are
-- 0x80-0xBF) matched the C1 range 0x80-0x9F and names such as 'Pruefung' with an umlaut
-- were refused as "control characters".  There, only C0 and DEL are checked here; bytes
-- from 0x80 are not characters the server can judge (pgtt-tui's own connections speak
-- UTF8, and its API, CLI and console check the full set before sending).

CREATE OR REPLACE FUNCTION timetable.name_problem(p_value text, p_empty_ok boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    c text;
BEGIN
    IF p_value IS NULL THEN
        RETURN NULL;
    END IF;
    IF getdatabaseencoding() = 'SQL_ASCII' THEN
        c := substring(p_value FROM '[\x01-\x1f\x7f]');
    ELSE
        c := substring(p_value FROM '[\x01-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]');
    END IF;
    IF c IS NOT NULL THEN
        RETURN format('must not contain control characters (U+%s at position %s)',
                      upper(lpad(to_hex(ascii(c)), 4, '0')), strpos(p_value, c));
    END IF;
    IF NOT p_empty_ok AND btrim(p_value) = '' THEN
        RETURN 'must not be empty';
    END IF;
    RETURN NULL;
END $$;
