"""The copy protocol: an artifact from one host to another, into `PATH.part`, verified, renamed.

This module owns every command the protocol runs and the parser of each
answer; compile only says what to copy (`CopyArtifact`). For one copy:

1. `stat` the source: a file or a directory, and its size;
2. the target's `PATH.part`: its size (a cut transfer left it: resume after its last byte) or none;
3. stream the bytes (mdsl.run.pipe), hashing them on the way: a file with `cat` (`tail -c +N` to resume),
   a directory as a tar stream; `via = rsync|scp|tailscale` instead runs the compiled push/pull command;
4. hash what landed on the target (a resumed part, and the source too, whole); a resumed part whose
   beginning was not the source's is removed and the copy starts over, once;
5. rename the part over the destination (mode and owner applied).

The journal's questions about artifacts (their hash after a step and when a
run resumes, their growing size while a dump runs) use the same commands.
A hash or a size is only taken from an answer of exactly the expected shape.
"""

from __future__ import annotations

import contextvars
import re
import threading
from typing import Callable, Dict, Optional, Tuple

from attrs import frozen

from mdsl.model import Host
from mdsl.compile.actions import CopyArtifact
from mdsl.compile.parts import Arg, Command, sh
from mdsl.run.backend import Result
from mdsl.run.errors import TransferError
from mdsl.run.executor import Executor
from mdsl.run.pipe import pipe


# ---------------------------------------------------------------- the commands, and their answers


def _cmd(host: Host, *items) -> Command:
    return Command(host.name, sh(*items), sudo=host.sudo, sudo_password=host.sudo_password)


def size_command(host: Host, path: str) -> Command:
    """Print `file SIZE` or `dir SIZE` for a path."""
    p = Arg(path)
    return _cmd(host, "if [ -d", p, "]; then printf 'dir '; du -sb", p, "| cut -f1;",
                "elif [ -f", p, "]; then printf 'file '; stat -c %s", p, ";",
                "else echo", Arg(f"mdsl: {path} does not exist"), ">&2; exit 3; fi")


def hash_command(host: Host, path: str) -> Command:
    """Print `sha256` then `size` of a file, or of a directory tree (sorted file list with contents).

    A file is hashed with `openssl dgst` where the host has it: coreutils' sha256sum does not use the
    CPU's SHA extensions (docs/performance.md). Same digest either way. A tree keeps `sha256sum` for its
    per-file lines, whose exact format is part of the tree's digest.
    """
    p = Arg(path)
    return _cmd(host, "if [ -d", p, "]; then",
                "(cd", p, "&& find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum)",
                "| sha256sum | cut -c1-64;",
                "du -sb", p, "| cut -f1;",
                "elif [ -f", p, "]; then",
                "{ if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi; } <", p,
                "| cut -c1-64; stat -c %s", p, ";",
                "else echo", Arg(f"mdsl: {path} does not exist"), ">&2; exit 3; fi")


def _part_size_command(host: Host, part: str) -> Command:
    return _cmd(host, "umask 077 && mkdir -p -- \"$(dirname --", Arg(part), ")\" &&",
                "if [ -f", Arg(part), "]; then stat -c %s", Arg(part), "; else echo 0; fi")


_HASH_ANSWER = re.compile(r"([0-9a-f]{64})\n([0-9]+)\n?")
_SIZE_ANSWER = re.compile(r"(file|dir) ([0-9]+)\n?")
_COUNT_ANSWER = re.compile(r"([0-9]+)\n?")


def parse_hash_answer(stdout: str) -> Optional[Tuple[str, int]]:
    """(sha256, size) from what `hash_command` printed; None for anything else (a banner, a broken tool)."""
    m = _HASH_ANSWER.fullmatch(stdout)
    return (m.group(1), int(m.group(2))) if m else None


def parse_size_answer(stdout: str) -> Optional[Tuple[str, int]]:
    """("file" | "dir", size) from what `size_command` printed; None for anything else."""
    m = _SIZE_ANSWER.fullmatch(stdout)
    return (m.group(1), int(m.group(2))) if m else None


def _parse_count(stdout: str) -> Optional[int]:
    m = _COUNT_ANSWER.fullmatch(stdout)
    return int(m.group(1)) if m else None


def untrusted_answer(host: str, what: str, stdout: str) -> str:
    """The message for an answer that does not have the expected shape."""
    shown = stdout if len(stdout) <= 160 else stdout[:160] + "..."
    return (f"{host} answered {what} with {shown!r}, not the expected shape; not trusting it "
            "(a login banner on stdout, or a broken tool on the host?)")


def _ok(executor: Executor, cmd: Command, what: str, timeout: Optional[float] = None) -> Result:
    res = executor.run(cmd, timeout=timeout)
    if not res.ok:
        raise TransferError(f"{what} failed (exit {res.exit})", cmd.host, cmd.render(masked=True), res.stderr,
                            exit=res.exit)
    return res


def _ask(executor: Executor, cmd: Command, what: str, parse: Callable[[str], Optional[object]], shape: str):
    """The parsed answer of `cmd`; TransferError when it fails or answers in another shape."""
    res = _ok(executor, cmd, what)
    got = parse(res.stdout)
    if got is None:
        raise TransferError(untrusted_answer(cmd.host, shape, res.stdout), cmd.host, cmd.render(masked=True),
                            res.stderr)
    return got


def remote_hash(executor: Executor, host: Host, path: str) -> Tuple[str, int]:
    """(sha256, size) of a file or tree on `host`; TransferError (with `exit`) when the command fails."""
    return _ask(executor, hash_command(host, path), f'hashing {host.name}:"{path}"', parse_hash_answer,
                f'`sha256sum` of "{path}"')


def remote_size(executor: Executor, host: Host, path: str, timeout: Optional[float] = None) -> Optional[int]:
    """The size of a file or tree on `host`, or None (not there yet, or an answer of another shape)."""
    res = executor.run(size_command(host, path), timeout=timeout)
    got = parse_size_answer(res.stdout) if res.ok else None
    return got[1] if got else None


# ---------------------------------------------------------------- the copy


@frozen
class Copied:
    """What a finished copy moved and what it verified."""

    sha256: str
    size: int
    bytes_sent: int
    resumed: bool = False


class Copier:
    """Performs one CopyArtifact through an executor; `on_bytes`/`on_total` feed a progress bar."""

    def __init__(self, executor: Executor, hosts: Dict[str, Host], on_bytes: Callable[[int], None] = lambda n: None,
                 on_total: Callable[[int], None] = lambda n: None):
        self.x = executor
        self.hosts = hosts
        self.on_bytes = on_bytes
        self.on_total = on_total

    def copy(self, a: CopyArtifact, expected_sha: Optional[str] = None) -> Copied:
        """Copy, verify, rename; raises TransferError."""
        hs, hd = self.hosts[a.source.host], self.hosts[a.dest.host]
        path = a.source.path
        kind, size = _ask(self.x, size_command(hs, path), f"looking at {path}", parse_size_answer, f"`stat` of {path}")
        self.on_total(size)
        part = a.dest.path + ".part"
        if a.via != "stream":
            copied = self._external(a, hs, hd, part)
        elif kind == "dir":
            copied = self._stream_dir(a, hs, hd, part, size)
        else:
            copied = self._stream_file(a, hs, hd, size, part)
        if expected_sha and a.verify and copied.sha256 != expected_sha:
            raise TransferError(f"{a.source} changed since the step that made it (sha256 {copied.sha256[:12]}..., "
                                f"journal says {expected_sha[:12]}...)", a.source.host)
        self._finish(a, hd, part, kind)
        return copied

    def _stream_file(self, a: CopyArtifact, hs: Host, hd: Host, size: int, part: str, retry: bool = True) -> Copied:
        have = _ask(self.x, _part_size_command(hd, part), "preparing the target", _parse_count, f"`stat` of {part}")
        resumed = 0 < have < size
        if not resumed and have:
            _ok(self.x, _cmd(hd, "rm -f --", Arg(part)), "removing a stale part")
        if resumed:
            self.on_bytes(have)
            src = _cmd(hs, "tail -c", Arg(f"+{have + 1}"), "<", Arg(a.source.path))
            dst = _cmd(hd, "umask 077 && cat >>", Arg(part))
        else:
            src = _cmd(hs, "cat <", Arg(a.source.path))
            dst = _cmd(hd, "umask 077 && cat >", Arg(part))
        passed = pipe(self.x, src, dst, a.timeout, size - have, self.on_bytes)
        got, got_size = remote_hash(self.x, hd, part)
        want = remote_hash(self.x, hs, a.source.path)[0] if resumed else passed
        if a.verify and got != want:
            if retry:  # a resumed part whose beginning was not the source's: start over once
                _ok(self.x, _cmd(hd, "rm -f --", Arg(part)), "removing a bad part")
                return self._stream_file(a, hs, hd, size, part, retry=False)
            raise TransferError(f"checksum mismatch after copying to {a.dest} (sent {want[:12]}..., "
                                f"landed {got[:12]}...)", a.dest.host)
        return Copied(got, got_size, size - (have if resumed else 0), resumed)

    def _stream_dir(self, a: CopyArtifact, hs: Host, hd: Host, part: str, size: int = 0) -> Copied:
        src = _cmd(hs, "tar --no-unquote -C", Arg(a.source.path), "-cf - .")
        dst = _cmd(hd, "umask 077 && rm -rf --", Arg(part), "&& mkdir -p --", Arg(part),
                   "&& tar --no-unquote -C", Arg(part), "-xf -")
        pipe(self.x, src, dst, a.timeout, size, self.on_bytes)
        want, size = remote_hash(self.x, hs, a.source.path)
        got, _ = remote_hash(self.x, hd, part)
        if a.verify and got != want:
            raise TransferError(f"tree hash mismatch after copying to {a.dest}", a.dest.host)
        return Copied(got, size, size)

    def _external(self, a: CopyArtifact, hs: Host, hd: Host, part: str) -> Copied:
        # The source is an artifact nothing writes to now: hash it while the copy runs, not after.
        source = {}

        def hash_source():
            try:
                source["v"] = remote_hash(self.x, hs, a.source.path)
            except BaseException as exc:  # handed to this thread below
                source["error"] = exc

        t = threading.Thread(target=contextvars.copy_context().run, args=(hash_source,), name="mdsl-hash-source",
                             daemon=True)
        t.start()
        try:
            for c in (a.push, a.pull):
                if c is not None:
                    _ok(self.x, c, f"{a.via} copy", a.timeout)
        finally:
            t.join()
        if "error" in source:
            raise source["error"]
        want, size = source["v"]
        got, _ = remote_hash(self.x, hd, part)
        self.on_bytes(size)
        if a.verify and got != want:
            raise TransferError(f"checksum mismatch after {a.via} to {a.dest}", a.dest.host)
        return Copied(got, size, size)

    def _finish(self, a: CopyArtifact, hd: Host, part: str, kind: str) -> None:
        items = []
        if kind == "dir":
            items += ["rm -rf --", Arg(a.dest.path), "&&"]
        items += ["mv -f -T --", Arg(part), Arg(a.dest.path)]
        if a.mode:
            items += ["&& chmod --", Arg(a.mode), Arg(a.dest.path)]
        if a.owner:
            items += ["&& chown -R --" if kind == "dir" else "&& chown --", Arg(a.owner), Arg(a.dest.path)]
        _ok(self.x, _cmd(hd, *items), "renaming into place")
