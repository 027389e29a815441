"""rsync's own progress and totals, read from its stdout (`--info=progress2 --stats`): the bytes done,
rate and ETA it reports while it runs, and the bytes it sent and received (the summary counts them)."""

from __future__ import annotations

import re
from typing import Callable, List, Optional

# `    32,768   1%    0.00kB/s    0:00:00` and `  3,002,000 100%  188.78MB/s    0:00:00 (xfr#2, to-chk=0/3)`
_PROGRESS = re.compile(rb"^\s*([\d,]+)\s+(\d+)%\s+([\d.]+)([kMGT]?B)/s\s+(\d+):(\d\d):(\d\d)")
_TOTAL = re.compile(rb"^Total bytes (sent|received): ([\d,.]+)\s*([KMGT]?)")
_UNITS = {b"B": 1, b"kB": 1000, b"MB": 1000 ** 2, b"GB": 1000 ** 3, b"TB": 1000 ** 4,
          b"": 1, b"K": 1024, b"M": 1024 ** 2, b"G": 1024 ** 3, b"T": 1024 ** 4}
# the lines the summary reads, which the narrative of a `live` pass leaves out with the progress lines
STATS_PREFIXES = ("Number of ", "Total ", "Literal data", "Matched data", "File list ", "sent ",
                  "total size is ")


class RsyncMeter:
    """Fed rsync's stdout chunk by chunk; calls `on_progress(bytes, percent, rate, eta)` per progress
    line, keeps the rest (its other output) and the totals of its `--stats`."""

    def __init__(self, on_progress: Optional[Callable[[int, int, float, float], None]] = None):
        self.on_progress = on_progress
        self.sent = 0
        self.received = 0
        self.done = 0  # bytes of file data done, as the last progress line said
        self._lines: List[bytes] = []
        self._rest = b""

    def feed(self, chunk: bytes) -> None:
        """More of rsync's stdout (progress lines end in `\\r`, others in `\\n`)."""
        data = self._rest + chunk
        parts = re.split(rb"[\r\n]", data)
        self._rest = parts.pop()
        for line in parts:
            self._line(line)

    def close(self) -> None:
        """The end of the output."""
        if self._rest:
            self._line(self._rest)
            self._rest = b""

    def _line(self, line: bytes) -> None:
        m = _PROGRESS.match(line)
        if m:
            self.done = int(m.group(1).replace(b",", b""))
            rate = float(m.group(3)) * _UNITS[m.group(4)]
            eta = int(m.group(5)) * 3600 + int(m.group(6)) * 60 + int(m.group(7))
            if self.on_progress is not None:
                self.on_progress(self.done, int(m.group(2)), rate, float(eta))
            return
        t = _TOTAL.match(line)
        if t:
            n = int(float(t.group(2).replace(b",", b"")) * _UNITS[t.group(3)])
            if t.group(1) == b"sent":
                self.sent = n
            else:
                self.received = n
        if line.strip():
            self._lines.append(line)

    @property
    def moved(self) -> int:
        """Bytes rsync put on the wire, both ways."""
        return self.sent + self.received

    def output(self) -> str:
        """Its output without the progress and statistics lines (what a `live` pass shows)."""
        return "\n".join(x for x in (b.decode("utf-8", "replace") for b in self._lines)
                         if not x.startswith(STATS_PREFIXES))
