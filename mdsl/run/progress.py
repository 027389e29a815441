"""Progress bars (rich) for transfers, dumps and archives: bytes, rate, ETA. Only on a TTY.

Off a terminal (CI, pipes, `--log-format json`) every call is a no-op, so the
runner calls it unconditionally.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Optional


class Task:
    """One bar; a no-op unless its Progress is live."""

    def __init__(self, progress=None, task_id=None):
        self._p, self._id = progress, task_id

    def advance(self, n: int) -> None:
        """`n` more bytes done."""
        if self._p is not None:
            self._p.advance(self._id, n)

    def set_total(self, total: Optional[int]) -> None:
        """The expected size, when known."""
        if self._p is not None:
            self._p.update(self._id, total=total)

    def set_completed(self, n: int) -> None:
        """Bytes done so far (for a file watched while it grows)."""
        if self._p is not None:
            self._p.update(self._id, completed=n)

    def done(self) -> None:
        """Remove the bar."""
        if self._p is not None:
            self._p.remove_task(self._id)
            self._p = None


class Progress:
    """Bars on stderr while steps run; `enabled=None` means: when stderr is a TTY."""

    def __init__(self, enabled: Optional[bool] = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._rich = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn, DownloadColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._rich = RichProgress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True)
            self._rich.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)
            self._rich = None

    def task(self, description: str, total: Optional[int] = None) -> Task:
        """A new bar (a no-op Task off a TTY); the description is shown as is (its brackets are not markup)."""
        if self._rich is None:
            return Task()
        from rich.markup import escape

        return Task(self._rich, self._rich.add_task(escape(description), total=total))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop drawing (the bars are cleared) while a question is on screen; draw again afterwards."""
        if self._rich is None:
            yield
            return
        self._rich.stop()
        try:
            yield
        finally:
            self._rich.start()
