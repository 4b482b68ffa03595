"""The pg_timetable-compatible chain scheduler and executor (module ``timetable``).

- ``scheduler``: due detection, exactly-once claims, ad-hoc START/STOP, dead-run reaping;
- ``executor``: runs one chain the way pg_timetable does (one transaction per chain ...);
- ``tasks``: the task-kind registry (SQL here; PROGRAM / BUILTIN plug in);
- ``service``: the worker Service; ``api``: what the CLI and the console call.
"""
