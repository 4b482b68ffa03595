"""PgQ in the engine: the public SQL API wrapped for the CLI and console (``api``), the
consumer batch loop (``consumer``) and the ticker / maintenance daemon (``ticker``).

Everything here goes through PgQ's public functions only, so it works the same against
our PL/pgSQL ``pgq`` schema and against a real ``pgq`` extension.
"""
