"""Console settings and connection profiles, from one TOML file.

Where the file is: ``$PGTT_TUI_CONFIG`` if set, else ``config.toml`` in platformdirs'
user config folder (``~/.config/pgtt-tui/config.toml`` on Linux). A missing file is an
empty config. Example::

    [console]
    refresh = 2.0            # seconds between polls (0.2 .. 60)
    theme = "textual-dark"   # any Textual theme name
    profile = "prod"         # the profile used when --profile is not given
    log_lines = 10000        # lines the log view keeps in memory

    [profiles.prod]
    dsn = "service=prod"     # libpq string or URI; passwords belong in ~/.pgpass
    read_only = true
    refresh = 5

    [profiles.staging]
    dsn = "host=stage-db dbname=jobs user=ops"

Precedence: command-line flags > the profile > ``[console]`` > built-in defaults.
Every bad value is an InputError naming the key and the problem.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.errors import InputError

CONFIG_ENV = "PGTT_TUI_CONFIG"
MIN_REFRESH = 0.2
MAX_REFRESH = 60.0
DEFAULT_REFRESH = 2.0
DEFAULT_THEME = "textual-dark"
DEFAULT_LOG_LINES = 10_000


@dataclass(frozen=True)
class Profile:
    name: str = ""
    dsn: str | None = None
    read_only: bool = False
    refresh: float = DEFAULT_REFRESH
    theme: str = DEFAULT_THEME
    log_lines: int = DEFAULT_LOG_LINES


@dataclass
class ConsoleConfig:
    path: Path | None = None
    console: Profile = field(default_factory=Profile)
    default_profile: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)

    def profile(self, name: str | None) -> Profile:
        """The named profile (or the default one) merged over ``[console]``."""
        chosen = name or self.default_profile
        if not chosen:
            return self.console
        if chosen not in self.profiles:
            known = ", ".join(sorted(self.profiles)) or "none defined"
            where = f" in {self.path}" if self.path else ""
            raise InputError("--profile", f"no profile named {chosen!r}{where} (known: {known})")
        return self.profiles[chosen]


def config_path() -> Path:
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs  # noqa: PLC0415 - only when a path is needed

    return Path(platformdirs.user_config_dir("pgtt-tui")) / "config.toml"


def check_refresh(value: Any, key: str = "--refresh") -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(key, f"{value!r} is not a number of seconds") from None
    if not MIN_REFRESH <= number <= MAX_REFRESH:
        raise InputError(key, f"{number:g} s is out of range {MIN_REFRESH:g}..{MAX_REFRESH:g} s")
    return number


_KEYS = {"dsn", "read_only", "refresh", "theme", "log_lines"}


def _profile_from(table: dict[str, Any], base: Profile, name: str, where: str) -> Profile:
    unknown = sorted(set(table) - _KEYS - ({"profile"} if where == "console" else set()))
    if unknown:
        raise InputError(f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_KEYS))})")
    out = replace(base, name=name)
    if "dsn" in table:
        if not isinstance(table["dsn"], str) or not table["dsn"].strip():
            raise InputError(f"{where}.dsn", "must be a non-empty string")
        out = replace(out, dsn=table["dsn"])
    if "read_only" in table:
        if not isinstance(table["read_only"], bool):
            raise InputError(f"{where}.read_only", "must be true or false")
        out = replace(out, read_only=table["read_only"])
    if "refresh" in table:
        out = replace(out, refresh=check_refresh(table["refresh"], f"{where}.refresh"))
    if "theme" in table:
        if not isinstance(table["theme"], str):
            raise InputError(f"{where}.theme", "must be a theme name")
        out = replace(out, theme=table["theme"])
    if "log_lines" in table:
        value = table["log_lines"]
        if not isinstance(value, int) or not 100 <= value <= 1_000_000:
            raise InputError(f"{where}.log_lines", "must be a whole number between 100 and 1000000")
        out = replace(out, log_lines=value)
    return out


def parse_config(text: str, path: Path | None = None) -> ConsoleConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(str(path or "config"), f"not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"console", "profiles"})
    if unknown:
        raise InputError(unknown[0], "unknown section (known: console, profiles)")
    console_table = data.get("console", {})
    if not isinstance(console_table, dict):
        raise InputError("console", "must be a table")
    console = _profile_from(console_table, Profile(), "", "console")
    default = console_table.get("profile")
    if default is not None and not isinstance(default, str):
        raise InputError("console.profile", "must be a profile name")
    profiles: dict[str, Profile] = {}
    raw_profiles = data.get("profiles", {})
    if not isinstance(raw_profiles, dict):
        raise InputError("profiles", "must be a table of tables")
    for name, table in raw_profiles.items():
        if not isinstance(table, dict):
            raise InputError(f"profiles.{name}", "must be a table")
        profiles[name] = _profile_from(table, console, name, f"profiles.{name}")
    config = ConsoleConfig(path=path, console=console, default_profile=default, profiles=profiles)
    if default is not None and default not in profiles:
        raise InputError("console.profile", f"names {default!r}, which is not under [profiles]")
    return config


def load_config(path: Path | None = None) -> ConsoleConfig:
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ConsoleConfig(path=path)
    except OSError as exc:
        raise InputError(str(path), f"cannot read the config file: {exc.strerror}") from None
    return parse_config(text, path)
