"""engine.db.redact: only the secret is replaced, the text around it stays intact, and
redacting twice (a redacted DSN inside a message that is redacted again) changes nothing."""

from __future__ import annotations

import pytest

from engine.db import ConnSettings, explain_connect_error, redact

CASES = [
    # key=value, unquoted, quoted, spaces around '=', escapes
    ("host=x password=s3cret dbname=y", "host=x password=*** dbname=y"),
    ("host=x password = s3cret dbname=y", "host=x password = *** dbname=y"),
    ("host=x password =s3cret", "host=x password =***"),
    ("host=x password='s3 cret' dbname=y", "host=x password=*** dbname=y"),
    ("host=x password = 'it\\'s s3cret' port=5", "host=x password = *** port=5"),
    ("password=s3\\ cret host=x", "password=*** host=x"),
    ("PASSWORD=s3cret", "PASSWORD=***"),
    ("sslpassword=s3cret host=x", "sslpassword=*** host=x"),
    ("PGPASSWORD=s3cret pgtt-tui worker", "PGPASSWORD=*** pgtt-tui worker"),
    ("host=x password=", "host=x password="),
    # URIs: user info, query parameters, both
    ("postgresql://bob:s3cret@db/prod", "postgresql://bob:***@db/prod"),
    ("postgres://bob:s3cret@db:5432/prod?sslmode=require", "postgres://bob:***@db:5432/prod?sslmode=require"),
    ("postgresql://bob:s3cret@h1:5432,h2:5433/prod", "postgresql://bob:***@h1:5432,h2:5433/prod"),
    ("postgresql://:s3cret@db/prod", "postgresql://:***@db/prod"),
    ("postgresql://db:5432/prod?password=s3cret", "postgresql://db:5432/prod?password=***"),
    ("postgresql://db/prod?sslmode=require&password=s3cret&application_name=a",
     "postgresql://db/prod?sslmode=require&password=***&application_name=a"),
    ("postgresql://db/prod?password=s3cret#frag", "postgresql://db/prod?password=***#frag"),
    ("postgresql://bob:pw1@db/prod?password=pw2", "postgresql://bob:***@db/prod?password=***"),
    # inside messages: the punctuation and words around the secret survive
    ("cannot connect to postgresql://bob:s3cret@db/prod: connection refused",
     "cannot connect to postgresql://bob:***@db/prod: connection refused"),
    ("--dsn: cannot parse 'host=x password=s3cret'", "--dsn: cannot parse 'host=x password=***'"),
    ("(host=x password=s3cret)", "(host=x password=***)"),
    ("host=x password=s3cret: connection refused", "host=x password=***: connection refused"),
    ("host=x password=s3:cret, port=5", "host=x password=***, port=5"),
    ("postgresql://h:5/db?password=s3cret: connection failed", "postgresql://h:5/db?password=***: connection failed"),
    ("'postgresql://h/db?password=s3cret'", "'postgresql://h/db?password=***'"),
    ("postgresql://h/db?password=&sslmode=require", "postgresql://h/db?password=&sslmode=require"),
    # no secret at all: unchanged
    ("postgresql://db:5432/prod failed for bob@example", "postgresql://db:5432/prod failed for bob@example"),
    ("password authentication failed for user \"bob\"", "password authentication failed for user \"bob\""),
    ("check the password (PGPASSWORD, ~/.pgpass or the password in --dsn)",
     "check the password (PGPASSWORD, ~/.pgpass or the password in --dsn)"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_redact_replaces_only_the_secret(text, expected):
    assert redact(text) == expected
    assert "s3cret" not in redact(text) and "pw1" not in redact(text) and "pw2" not in redact(text)


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_redacting_twice_changes_nothing(text, expected):
    assert redact(redact(text)) == expected


@pytest.mark.parametrize("dsn", ["host=h port=5 password=s3cret", "postgresql://h:5/db?password=s3cret",
                                 "postgresql://bob:s3cret@h:5/db"])
def test_a_connection_error_message_keeps_its_text_when_redacted_again(dsn):
    """The CLI redacts the whole error line once more: nothing around the secrets moves
    (issue 13: 'password= *** --dsn)' and 's5?password=*** connection failed')."""
    settings = ConnSettings(dsn=dsn)
    message = str(explain_connect_error(Exception("password authentication failed for user \"bob\""), settings))
    assert "s3cret" not in message
    assert redact(message) == message
    assert message.endswith("— check the password (~/.pgpass, PGPASSWORD, or -W to type it)")
    assert f"cannot connect to {redact(dsn)}: password authentication failed" in message
