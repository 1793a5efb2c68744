"""The bridge command line's rich consoles (ig_bridge.cli and its command modules)."""

from __future__ import annotations

from rich.console import Console

# Outside a terminal (Airflow task logs, CI) rich assumes 80 columns and cuts long cells to
# "…": the landed path and report path must be printed whole there, on one line to copy.
_PIPE_WIDTH = 10_000


def _console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=_PIPE_WIDTH)


console = _console(stderr=True)
