"""What a person running `rtrec pipeline` or `make demo` follows: a compact view of the run.

The flows log as usual (everything goes to Prefect). Lines meant for a person's view are logged
with `summary(...)`: the steps, rows cleaned and quarantined, one line per training epoch, the
promotion decision. While `compact_console` is active, Prefect's console shows warnings and errors
only, the summary lines are printed, and every record of the run at INFO and above is written to a
log file as well: the ~200 lines of a dbt build are one line away, not on the screen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger
from prefect.logging.configuration import ensure_logging_setup
from prefect.logging.handlers import PrefectConsoleHandler
from rich.console import Console

MARK = "rtrec_summary"


def summary(message: str, *args: object) -> None:
    """Log an INFO line of the run that the compact view shows."""
    get_run_logger().info(message, *args, extra={MARK: True})


class _SummaryHandler(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, MARK, False):
            stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
            self.console.print(f"[dim]{stamp}[/dim] {record.getMessage()}", soft_wrap=True, highlight=False)


@contextmanager
def compact_console(log_dir: Path, console: Console) -> Iterator[Path]:
    """Run the block with the compact view; yields the path of the full log file."""
    ensure_logging_setup()  # Prefect's own set-up, once: it would drop handlers added before it
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"pipeline-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.log"
    full = logging.FileHandler(path)
    full.setLevel(logging.INFO)
    full.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s - %(message)s"))
    handlers = [full, _SummaryHandler(console)]
    prefect_logger = logging.getLogger("prefect")  # flow and task run loggers propagate through it
    consoles = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    levels = [h.level for h in consoles]
    for handler in handlers:
        prefect_logger.addHandler(handler)
    for handler in consoles:
        handler.setLevel(logging.WARNING)
    try:
        yield path
    finally:
        for handler, level in zip(consoles, levels):
            handler.setLevel(level)
        for handler in handlers:
            prefect_logger.removeHandler(handler)
        full.close()
