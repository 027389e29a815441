"""A compiled Command as JSON and back, for the journal: what a later run needs to run it again with no plan.

Secrets stay references (`env("X")`, `file("P")`), read again when the command runs; their values are
never written. Only the parts a Command is made of are accepted back (Lit, Arg, Sub, SecretArg): a
journal that holds anything else is refused with ValueError.
"""

from __future__ import annotations

from typing import Any, Optional

from mdsl.compile.parts import Arg, Command, Lit, SecretArg, SecretText, Sub
from mdsl.syntax import ast as A


def _secret(s: Optional[A.Secret]) -> Any:
    return None if s is None else [s.source, s.arg]


def _secret_back(v: Any) -> Optional[A.Secret]:
    if v is None:
        return None
    source, arg = v
    if source not in ("env", "file") or not isinstance(arg, str):
        raise ValueError(f"not a secret reference: {v!r}")
    return A.Secret(source, arg)


def _text(t: Optional[SecretText]) -> Any:
    if t is None:
        return None
    return [["lit", p.text] if isinstance(p, Lit) else ["secret", _secret(p.secret), p.escape] for p in t.parts]


def _text_back(v: Any) -> Optional[SecretText]:
    if v is None:
        return None
    parts = []
    for p in v:
        if p[0] == "lit" and isinstance(p[1], str):
            parts.append(Lit(p[1]))
        elif p[0] == "secret":
            parts.append(SecretArg(_secret_back(p[1]), p[2]))
        else:
            raise ValueError(f"not a part of a secret text: {p!r}")
    return SecretText(parts)


def to_json(cmd: Command) -> dict:
    """The command as plain JSON values."""
    parts = []
    for p in cmd.parts:
        if isinstance(p, Lit):
            parts.append(["lit", p.text])
        elif isinstance(p, Arg):
            parts.append(["arg", str(p.value), p.prefix])
        else:
            parts.append(["sub", to_json(p.command)])
    return {"host": cmd.host, "parts": parts, "run_as": cmd.run_as, "sudo": cmd.sudo,
            "sudo_password": _secret(cmd.sudo_password), "stdin": _text(cmd.stdin),
            "secret_files": [[var, _text(t)] for var, t in cmd.secret_files], "tools": list(cmd.tools),
            "argv": cmd.argv}


def from_json(d: dict) -> Command:
    """The command `to_json` wrote; ValueError (or KeyError, TypeError) for anything else."""
    parts = []
    for p in d["parts"]:
        if p[0] == "lit":
            parts.append(Lit(str(p[1])))
        elif p[0] == "arg":
            parts.append(Arg(str(p[1]), str(p[2])))
        elif p[0] == "sub":
            parts.append(Sub(from_json(p[1])))
        else:
            raise ValueError(f"not a command part: {p!r}")
    return Command(str(d["host"]), parts, run_as=d.get("run_as"), sudo=bool(d.get("sudo")),
                   sudo_password=_secret_back(d.get("sudo_password")), stdin=_text_back(d.get("stdin")),
                   secret_files=[(str(var), _text_back(t)) for var, t in d.get("secret_files", ())],
                   tools=tuple(d.get("tools", ())), argv=bool(d.get("argv")))
