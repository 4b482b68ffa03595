"""The pgpro_scheduler-style ``schedule`` module: the job manager (manager.py) and the
calls the CLI and the console make (api.py).  The SQL side is sql/schedule/."""
