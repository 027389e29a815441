"""Commands built from typed parts (pyinfra's habit): trusted shell syntax,
quoted user values, and secrets that are never rendered.

A user value only ever reaches shell text through `Arg`, which always
`shlex.quote`s it: quoting is decided by the part's type, not by care at each
call site. A `SecretArg` never reaches a command line at all: it may only sit
in a `SecretText` (a command's stdin, or the content of a 0600 file such as a
PGPASSFILE), and shows as `***` wherever it is displayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shlex
from typing import Callable, Dict, Iterator, Mapping, Optional, Tuple, Union

from attrs import field, frozen

from mdsl.syntax import ast as A

MASK = "***"


class CompileError(Exception):
    """A step that cannot be turned into safe commands (e.g. `delete` of `/`)."""

    def __init__(self, message: str, span: A.Span = A.NOWHERE, help: Optional[str] = None):
        super().__init__(message)
        self.message, self.span, self.help = message, span, help


@frozen
class RenderContext:
    """How a command is being rendered: masked for display, or with real secret-file paths to run."""

    masked: bool = True
    secret_paths: Optional[Mapping[str, str]] = None
    under_root: bool = False  # an enclosing `sudo --` already made us root


@frozen
class Lit:
    """Trusted shell syntax, written by mdsl itself or by the operator as a command (`run HOST "cmd"`)."""

    text: str

    def render(self, ctx: Optional[RenderContext] = None) -> str:
        """The text as is."""
        return self.text


@frozen
class Arg:
    """A user value (path, name, unit): always one shell word, `shlex.quote`d; `prefix` is trusted (`--dbname=`)."""

    value: str
    prefix: str = ""

    def render(self, ctx: Optional[RenderContext] = None) -> str:
        """One quoted shell word."""
        return shlex.quote(self.prefix + str(self.value))


def _pgpass_escape(value: str) -> str:
    # .pgpass fields are ':'-separated; ':' and '\' inside a field are backslash-escaped.
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _mycnf_escape(value: str) -> str:
    # A MySQL/MariaDB option file value in double quotes: `\\`, `"` and line breaks backslash-escaped;
    # `#`, `;`, `'` and spaces are literal inside the quotes.
    return ('"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
            + '"')


def _mysql_literal(value: str) -> str:
    # A MySQL/MariaDB string literal: backslashes doubled too, as the default sql_mode reads them as escapes.
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _pg_password_literal(value: str) -> str:
    # The SQL literal of `ALTER ROLE ... PASSWORD`: the SCRAM-SHA-256 verifier the server would store, so
    # the password itself reaches neither the server's statement log nor pg_stat_activity. A non-ASCII
    # password goes as it is: the client normalises it (SASLprep) before hashing, which is not repeated here.
    if not value.isascii():
        return "'" + value.replace("'", "''") + "'"
    salt, rounds = os.urandom(16), 4096
    salted = hashlib.pbkdf2_hmac("sha256", value.encode(), salt, rounds)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    salt_text, stored_text, server_text = (base64.b64encode(raw).decode() for raw in (salt, stored, server))
    return f"'SCRAM-SHA-256${rounds}:{salt_text}${stored_text}:{server_text}'"


def _pg_conninfo_in_literal(value: str) -> str:
    # A libpq connection string's value (single-quoted, backslash-escaped), inside a SQL string literal
    # (quotes doubled): the password of `CREATE SUBSCRIPTION ... CONNECTION '... password=VALUE'`.
    quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return quoted.replace("'", "''")


_ESCAPES: Dict[Optional[str], Callable[[str], str]] = {None: lambda v: v, "pgpass": _pgpass_escape,
                                                       "mycnf": _mycnf_escape, "mysql-literal": _mysql_literal,
                                                       "pg-password": _pg_password_literal,
                                                       "pg-conninfo": _pg_conninfo_in_literal}


@frozen
class SecretArg:
    """A secret (`env("X")` / `file("P")`), read at apply time; displayed as `***`, never in argv."""

    secret: A.Secret
    escape: Optional[str] = None  # how the value is escaped where it lands ("pgpass")

    def render(self, ctx: Optional[RenderContext] = None) -> str:
        """Always `***`: secrets travel only through stdin or 0600 files."""
        return MASK


# Looks up a secret's value at apply time.
SecretLookup = Callable[[A.Secret], str]


@frozen
class SecretText:
    """Content that holds secrets (a PGPASSFILE line, a sudo password): revealed only into stdin or a 0600 file."""

    parts: Tuple[Union[Lit, SecretArg], ...] = field(converter=tuple)

    def masked(self) -> str:
        """How it is shown: literal parts as they are, secrets as `***`."""
        return "".join(p.render(RenderContext()) for p in self.parts)

    def reveal(self, lookup: SecretLookup) -> bytes:
        """The real content; only ever written to a pipe or a private file."""
        out = []
        for p in self.parts:
            out.append(_ESCAPES[p.escape](lookup(p.secret)) if isinstance(p, SecretArg) else p.text)
        return "".join(out).encode()

    @property
    def secrets(self) -> Tuple[A.Secret, ...]:
        """The secrets this text needs."""
        return tuple(p.secret for p in self.parts if isinstance(p, SecretArg))


@frozen
class Sub:
    """A nested command run as another user inside a larger one (`sudo -u pg pg_dump ... > FILE`)."""

    command: "Command"

    def render(self, ctx: RenderContext) -> str:
        """The nested command, wrapped for its own user."""
        return self.command.render_in(ctx)


Part = Union[Lit, Arg, Sub]


def _check_parts(parts):
    parts = tuple(parts)
    for p in parts:
        if not isinstance(p, (Lit, Arg, Sub)):
            raise TypeError(f"a command line takes Lit, Arg and Sub parts only, not {type(p).__name__}")
    return parts


@frozen
class SecretFile:
    """Private content handed to a command through a 0600 temp file named by `var` (e.g. PGPASSFILE)."""

    var: str
    content: SecretText
    owner: "Command"  # the file is created by this command's user, so that user can read it


@frozen
class Command:
    """One shell command on one host, built from parts; wrapped in `sudo` for `run_as` or a sudo host.

    `secret_files` maps an environment variable to private content: at run time
    each is written to a 0600 temp file (through stdin) whose path is put in
    that variable for this command only, then removed.
    """

    host: str
    parts: Tuple[Part, ...] = field(converter=_check_parts)
    run_as: Optional[str] = None
    sudo: bool = False
    sudo_password: Optional[A.Secret] = None
    stdin: Optional[SecretText] = None
    secret_files: Tuple[Tuple[str, SecretText], ...] = field(default=(), converter=tuple)
    tools: Tuple[str, ...] = field(default=(), converter=tuple)
    argv: bool = False  # a plain program and its arguments: sudo runs it directly, without `sh -c`

    # -- rendering

    def render(self, masked: bool = True, secret_paths: Optional[Mapping[str, str]] = None) -> str:
        """The complete shell text as it runs on the host (`masked`: secret files shown as `***`)."""
        return self.render_in(RenderContext(masked=masked, secret_paths=secret_paths))

    def render_in(self, ctx: RenderContext) -> str:
        """Render inside a context (nested commands know whether an outer sudo made them root)."""
        inner_ctx = RenderContext(ctx.masked, ctx.secret_paths, ctx.under_root or self.becomes_root)
        env = []
        for var, text in self.secret_files:
            if ctx.secret_paths is not None and var in ctx.secret_paths:
                env.append(var + "=" + shlex.quote(ctx.secret_paths[var]))
            else:
                env.append(f"{var}=<0600 temp file: {text.masked().strip()}>")
        words = [p.render(inner_ctx) for p in self.parts]
        if self.argv and self.uses_sudo and not (ctx.under_root and not self.run_as):
            # sudo resets the environment, so the variables go through `env` after it.
            return self._sudo_words(ctx.under_root) + " " + " ".join((["env"] + env if env else []) + words)
        return self._wrap(" ".join(env + words), ctx.under_root)

    @property
    def becomes_root(self) -> bool:
        """True when this command runs under `sudo --` (host-level sudo, no other user)."""
        return self.sudo and not self.run_as

    @property
    def uses_sudo(self) -> bool:
        """True when the command is wrapped in sudo."""
        return bool(self.run_as or self.sudo)

    def _wrap(self, inner: str, under_root: bool) -> str:
        if not self.uses_sudo:
            return inner
        if under_root and not self.run_as:
            return inner
        return self._sudo_words(under_root) + " sh -c " + shlex.quote(inner)

    def _sudo_words(self, under_root: bool) -> str:
        words = ["sudo"]
        # Only the outermost sudo reads the password from stdin; root never needs one.
        words += ["-S", "-p", "''"] if (self.sudo_password is not None and not under_root) else ["-n"]
        if self.run_as:
            words += ["-u", shlex.quote(self.run_as)]
        words.append("--")
        return " ".join(words)

    def stdin_text(self) -> Optional[SecretText]:
        """What goes to the command's stdin: the sudo password line first, then its own stdin."""
        parts = []
        if self.sudo_password is not None and self.uses_sudo:
            parts += [SecretArg(self.sudo_password), Lit("\n")]
        if self.stdin is not None:
            parts += list(self.stdin.parts)
        return SecretText(parts) if parts else None

    def all_secret_files(self) -> Iterator[SecretFile]:
        """Every secret file this command and its nested commands need."""
        for var, text in self.secret_files:
            yield SecretFile(var, text, self)
        for p in self.parts:
            if isinstance(p, Sub):
                yield from p.command.all_secret_files()

    def all_tools(self) -> Tuple[str, ...]:
        """Programs this command (and nested ones) needs on its host."""
        out = list(self.tools)
        if self.uses_sudo:
            out.append("sudo")
        for p in self.parts:
            if isinstance(p, Sub):
                out += p.command.all_tools()
        return tuple(dict.fromkeys(out))

    @property
    def secrets(self) -> Tuple[A.Secret, ...]:
        """Every secret this command needs at run time."""
        out = []
        st = self.stdin_text()
        if st is not None:
            out += st.secrets
        for sf in self.all_secret_files():
            out += sf.content.secrets
            if sf.owner.sudo_password is not None:
                out.append(sf.owner.sudo_password)
        return tuple(dict.fromkeys(out))

    def private_file_writer(self) -> "Command":
        """The command that makes a 0600 temp file from stdin and prints its path, as this command's user."""
        return Command(self.host, (Lit('umask 077 && f=$(mktemp "${TMPDIR:-/tmp}/mdsl-secret.XXXXXXXX") '
                                       '&& cat > "$f" && printf %s "$f"'),),
                       run_as=self.run_as, sudo=self.sudo, sudo_password=self.sudo_password)

    def remover(self, path: str) -> "Command":
        """`rm -f PATH` as this command's user (cleans up a private temp file)."""
        return Command(self.host, (Lit("rm -f --"), Arg(path)), run_as=self.run_as, sudo=self.sudo,
                       sudo_password=self.sudo_password)

    def __str__(self) -> str:
        return self.render(masked=True)


def sh(*items: Union[str, Part]) -> Tuple[Part, ...]:
    """Parts from a mix: plain `str` items are trusted syntax; `Arg`s and `Sub`s stay as they are."""
    return tuple(Lit(i) if isinstance(i, str) else i for i in items)
