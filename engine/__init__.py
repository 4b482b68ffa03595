"""Headless engine of pgtt-tui.

This package never imports textual, rich or pgtt_tui (tests/test_import_hygiene.py
enforces it): every console action is an engine call that a script can make too.
Submodules are imported explicitly by their users; nothing is re-exported here so that
``import engine.db`` stays cheap.
"""

__version__ = "0.1.0"
