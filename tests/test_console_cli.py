"""The console commands' plumbing: engine logs stay off the terminal while the TUI runs."""

from __future__ import annotations

import logging

from pgtt_tui.cli import console


def test_demo_engine_logs_go_to_a_file_not_the_terminal(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        path = console._engine_log_file()
        assert str(path).startswith(str(tmp_path))
        logging.getLogger("pgtt.worker.timetable").error("cannot record the end of run 7")
        for handler in root.handlers:
            handler.flush()
        out, err = capfd.readouterr()
        assert "run 7" not in out and "run 7" not in err
        assert "ERROR pgtt.worker.timetable: cannot record the end of run 7" in path.read_text()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
