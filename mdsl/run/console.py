"""What apply tells and asks the operator: the narrative on stdout, warnings on stderr, yes/no questions."""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Callable, ContextManager, Optional, TextIO

from mdsl.run.errors import Refused


def _discard_typed_ahead(fd: int) -> None:
    """Drop what was typed before the question was shown: only an answer typed after it counts."""
    try:
        import termios

        termios.tcflush(fd, termios.TCIFLUSH)
    except (ImportError, OSError):
        pass


def tty_ask(prompt: str) -> Optional[bool]:
    """Ask yes/no on the terminal (/dev/tty, else a TTY stdin); None when there is no terminal.

    Written straight to the terminal (no markup: brackets stay), on a line of its own; what was typed
    before the question appeared is discarded, and one line answers it.
    """
    try:
        tty = open("/dev/tty", "r+", encoding="utf-8", errors="replace")
    except OSError:
        tty = None
    if tty is not None:
        with tty:
            _discard_typed_ahead(tty.fileno())
            tty.write("\r\x1b[K" + prompt + " [y/N] ")
            tty.flush()
            return tty.readline().strip().lower() in ("y", "yes")
    if sys.stdin is not None and sys.stdin.isatty():
        _discard_typed_ahead(sys.stdin.fileno())
        out = sys.__stdout__ or sys.stdout
        out.write(prompt + " [y/N] ")
        out.flush()
        line = sys.stdin.readline()
        return line.strip().lower() in ("y", "yes") if line else False
    return None


def have_tty() -> bool:
    """True when `tty_ask` has a terminal to ask on."""
    try:
        with open("/dev/tty", "r+"):
            return True
    except OSError:
        return bool(sys.stdin is not None and sys.stdin.isatty())


class Console:
    """The operator's side of a run: lines on stdout and stderr (one at a time across threads), questions."""

    def __init__(self, out: TextIO, err: TextIO, ask: Callable[[str], Optional[bool]] = tty_ask,
                 yes: bool = False):
        self.out, self.err = out, err
        self.ask_fn = ask
        self.yes = yes  # `--yes`: every question is answered yes without asking
        self._lock = threading.Lock()
        # While a question is on screen the live progress display stops drawing (mdsl.run.progress)
        self.pause: Callable[[], ContextManager] = contextlib.nullcontext

    def say(self, text: str = "") -> None:
        """A line of the narrative (stdout)."""
        with self._lock:
            print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        """A line on stderr."""
        with self._lock:
            print(text, file=self.err, flush=True)

    def ask(self, prompt: str, what: str) -> None:
        """Ask yes/no unless `--yes`; raises Refused on a no, or when there is no terminal to ask on."""
        if self.yes:
            return
        answer = self.question(prompt)
        if answer is None:
            raise Refused(f"{what} needs a confirmation, but there is no terminal to ask on; "
                          "run from a terminal or pass --yes")
        if not answer:
            raise Refused(f"{what}: not confirmed")

    def question(self, prompt: str) -> Optional[bool]:
        """Ask one yes/no question (None: no terminal), with the progress display paused and no other line
        written meanwhile: the question stays whole on screen until it is answered."""
        with self._lock, self.pause():
            return self.ask_fn(prompt)

    def can_ask(self) -> bool:
        """False when a question would have no one to answer it (no `--yes`, no terminal)."""
        return self.yes or self.ask_fn is not tty_ask or have_tty()


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
