"""Running compiled `Command`s through the hosts' backends: 0600 secret files, sudo's stdin, cleanup."""

from __future__ import annotations

import contextvars
from typing import Dict, Iterator, List, Optional, Tuple, Union

import attrs

from mdsl.compile.parts import Command
from mdsl.run import journal as J
from mdsl.run import log
from mdsl.run.backend import Backend, BackendError, BulkClient, Result
from mdsl.run.secrets import SecretStore

# The step whose commands this thread runs (a parallel block's members run in copied contexts):
# the command pids and temp files journaled for it (mdsl.run.leftovers). None: no step (a probe).
current_step: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar("mdsl_step", default=None)


class Executor:
    """Runs compiled `Command`s through the hosts' backends: secret files, sudo stdin, cleanup."""

    def __init__(self, backends: Dict[str, Backend], secrets: SecretStore):
        self.backends = backends
        self.secrets = secrets
        # Set once steps run (and by preflight, lazily): the paths of secret files are journaled.
        self.journal: Optional[Union[J.Journal, J.LazyJournal]] = None

    def _stdin(self, cmd: Command) -> Optional[bytes]:
        st = cmd.stdin_text()
        return st.reveal(self.secrets.lookup) if st is not None else None

    def _backend(self, cmd: Command) -> Backend:
        return self.backends[cmd.host]

    def run(self, cmd: Command, timeout: Optional[float] = None) -> Result:
        """Run one command; 0600 secret files exist only while it runs."""
        backend = self._backend(cmd)
        paths: Dict[str, str] = {}
        made: List[Tuple[Command, str]] = []
        try:
            for sf in cmd.all_secret_files():
                if sf.var not in paths:
                    paths[sf.var] = self._make_secret_file(backend, cmd.host, sf)
                    made.append((sf.owner, paths[sf.var]))
            return backend.run(cmd.render(masked=False, secret_paths=paths), stdin=self._stdin(cmd),
                               timeout=timeout)
        finally:
            for owner, path in made:
                self._remove_secret_file(backend, cmd.host, owner, path)

    def _make_secret_file(self, backend: Backend, host: str, sf) -> str:
        writer = attrs.evolve(sf.owner.private_file_writer(), stdin=sf.content)
        res = backend.run(writer.render(masked=False), stdin=self._stdin(writer), timeout=60)
        path = res.stdout.strip()
        if not res.ok or not path:
            raise BackendError(host, "cannot create a private temp file: " + log.redact_text(res.stderr.strip()))
        if self.journal is not None:  # the path only: a killed run's file is removed by the next
            self.journal.secret_file_created(current_step.get(), host, path, sf.owner.run_as, sf.owner.sudo)
        return path

    def _remove_secret_file(self, backend: Backend, host: str, owner: Command, path: str) -> None:
        rm = owner.remover(path)
        try:
            gone = backend.run(rm.render(masked=False), stdin=self._stdin(rm), timeout=60).ok
        except BackendError:
            gone = False
        if gone and self.journal is not None:
            self.journal.secret_file_removed(host, path)

    def read_stream(self, cmd: Command, sink, timeout: Optional[float] = None) -> Result:
        """Stream a command's stdout (no stdin: a host needing a sudo password cannot be streamed from)."""
        if cmd.stdin_text() is not None or list(cmd.all_secret_files()):
            raise BackendError(cmd.host, "cannot stream from a host whose sudo needs a password",
                               hint="use `via = rsync` or passwordless sudo on that host")
        return self._backend(cmd).read_stream(cmd.render(masked=False), sink, timeout=timeout)

    def bulk_client(self, cmd: Command) -> Optional[BulkClient]:
        """An OpenSSH client running `cmd` for bulk bytes (sudo's password line first); None when not possible."""
        if list(cmd.all_secret_files()):
            return None
        client = self._backend(cmd).bulk_client(cmd.render(masked=False))
        return attrs.evolve(client, first_stdin=self._stdin(cmd)) if client is not None else None

    def write_stream(self, cmd: Command, chunks: Iterator[bytes], timeout: Optional[float] = None) -> Result:
        """Stream into a command's stdin (after the sudo password line, when there is one)."""
        first = self._stdin(cmd)

        def all_chunks():
            if first:
                yield first
            yield from chunks

        return self._backend(cmd).write_stream(cmd.render(masked=False), all_chunks(), timeout=timeout)
