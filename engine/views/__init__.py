"""Read models for the console's views (and the CLI's text forms of them): what the
overview, sessions, logs, queues and charts show, read from the database in one place each.
Plain data out; no widget, no Textual, no Rich."""
