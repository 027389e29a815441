"""Progress on the terminal while steps run (rich): a line per step running longer than a second
(what it does, how long so far), and bars for what moves bytes (transfers, dumps, archives, rsync):
bytes, total when known, rate and ETA. Only on a TTY.

Off a terminal (CI, pipes, `--log-format json`) every call is a no-op, so the
runner calls it unconditionally.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Iterator, Optional, TextIO

from rich.markup import escape

from mdsl.run.console import human_bytes

# A step shows its line once it has run this long (a quick step would only flicker).
SHOW_AFTER = 1.0


class Task:
    """One bar or line; a no-op unless its Progress is live."""

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

    def set_fields(self, **fields) -> None:
        """What the bar shows beside its bytes: `detail` (a line's text), `rate`/`eta` (as a tool reported)."""
        if self._p is not None:
            self._p.update(self._id, **fields)

    def done(self) -> None:
        """Remove the bar."""
        if self._p is not None:
            self._p.remove_task(self._id)
            self._p = None


def amount_text(completed: float, total: Optional[float], rate: Optional[float], eta: Optional[float]) -> str:
    """`1.5 MiB / 40.0 MiB  3.0 MiB/s  eta 0:13`: what a byte bar shows (parts unknown are left out)."""
    out = human_bytes(int(completed)) + (f" / {human_bytes(int(total))}" if total else "")
    if rate:
        out += f"  {human_bytes(int(rate))}/s"
    if eta is not None and eta >= 0:
        out += f"  eta {int(eta) // 60}:{int(eta) % 60:02d}"
    return out


def _amount_column():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Amount(ProgressColumn):
        """Bytes, rate and ETA for a bar; the running time and what it does for a step's line."""

        def render(self, task) -> Text:
            f = task.fields
            if f.get("line"):
                secs = int(task.elapsed or 0)
                return Text(f"{secs // 60}:{secs % 60:02d}" + (f"  {f['detail']}" if f.get("detail") else ""))
            rate = f.get("rate") if f.get("rate") is not None else task.speed
            eta = f.get("eta")
            if eta is None and task.total and rate:
                eta = max(0.0, (task.total - task.completed) / rate)
            return Text(amount_text(task.completed, task.total, rate, eta))

    return Amount()


class Progress:
    """Bars on stderr (or `file`) while steps run; `enabled=None` means: when it is a TTY."""

    def __init__(self, enabled: Optional[bool] = None, file: Optional[TextIO] = None):
        self.file = file if file is not None else sys.stderr
        self.enabled = self.file.isatty() if enabled is None else enabled
        self._rich = None

    def __enter__(self) -> "Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress as RichProgress, TextColumn

            console = Console(file=self.file, force_terminal=True if self.file is not sys.stderr else None)
            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), _amount_column(),
                                      console=console, transient=True)
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

    def line(self, description: str) -> "StepLine":
        """A step's line, shown once it has run SHOW_AFTER seconds; its `detail` says what it does now."""
        return StepLine(self, description)


class StepLine:
    """What a step is doing, shown after SHOW_AFTER seconds and removed when the step ends."""

    def __init__(self, progress: Progress, description: str):
        self._progress, self._description = progress, description
        self._detail = ""
        self._task: Optional[Task] = None
        self._lock = threading.Lock()
        self._timer: Optional[threading.Timer] = None
        self._t0 = time.monotonic()
        if progress.enabled:
            self._timer = threading.Timer(SHOW_AFTER, self._show)
            self._timer.daemon = True
            self._timer.start()

    def _show(self) -> None:
        with self._lock:
            rich = self._progress._rich
            if self._timer is None or rich is None:
                return
            task_id = rich.add_task(escape(self._description), total=None, line=True, detail=self._detail)
            self._task = Task(rich, task_id)

    def detail(self, text: str) -> None:
        """What the step does now (`waiting for mastodon-web to stop`, `rsync old -> new`)."""
        with self._lock:
            self._detail = text
            if self._task is not None:
                self._task.set_fields(detail=text)

    def close(self) -> None:
        """The step ended: remove the line (if it was shown)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._task is not None:
                self._task.done()
                self._task = None
