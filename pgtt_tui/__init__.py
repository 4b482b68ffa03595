"""pgtt-tui: the Textual console and the typer CLI, on top of the headless ``engine``."""

from engine import __version__

__all__ = ["__version__"]
