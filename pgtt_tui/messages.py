"""Messages that workers post to the UI.

Workers (threads) never touch widgets: they call engine functions and post one of these;
handlers on screens and the app own every change to what is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class PollDone(Message):
    """A view's poll finished; ``data`` is whatever the view's ``fetch`` returned."""

    view: str
    data: Any
    generation: int = 0


@dataclass
class PollFailed(Message):
    """A view's poll failed; ``lost`` is True when the connection is gone."""

    view: str
    error: str
    lost: bool = False


@dataclass
class PollDenied(Message):
    """A view's poll was refused for lack of privileges; ``no_access`` (engine.access.NoAccess)
    says what this role lacks and the grant that would fix it."""

    view: str
    no_access: Any


@dataclass
class ConnectionChanged(Message):
    """The console lost (ok=False) or regained (ok=True) the database."""

    ok: bool
    error: str = ""


@dataclass
class ActionDone(Message):
    """A write action succeeded; ``summary`` is shown to the operator."""

    action: str
    summary: str
    result: Any = None


@dataclass
class ActionFailed(Message):
    """A write action failed; ``error`` is the database's (or the engine's) message."""

    action: str
    error: str


@dataclass
class LogBatch(Message):
    """New log lines from the tail worker (oldest first)."""

    entries: list
    lag_seconds: float = 0.0


@dataclass
class LogHistory(Message):
    """An older page of log lines (oldest first) to put above what is shown."""

    entries: list
    exhausted: bool = False
