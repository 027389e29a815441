"""The plan's secrets (`env("X")`, `file("P")`), read on the control machine at apply time."""

from __future__ import annotations

import os
from typing import Dict

from mdsl.run import log
from mdsl.syntax import ast as A


class SecretStore:
    """Reads `env("X")` / `file("P")` on the control machine at apply time; every value is redacted from logs."""

    def __init__(self, environ=None, base_dir: str = "."):
        self.environ = os.environ if environ is None else environ
        self.base_dir = base_dir
        self._values: Dict[A.Secret, str] = {}

    def lookup(self, secret: A.Secret) -> str:
        """The secret's value (read once)."""
        if secret in self._values:
            return self._values[secret]
        if secret.source == "env":
            if secret.arg not in self.environ:
                raise KeyError(f"environment variable {secret.arg} is not set")
            value = self.environ[secret.arg]
        else:
            path = os.path.join(self.base_dir, os.path.expanduser(secret.arg))
            try:
                with open(path, encoding="utf-8") as f:
                    value = f.read()
            except OSError as exc:
                raise KeyError(f"cannot read {secret.arg}: {exc.strerror}") from None
            value = value[:-1] if value.endswith("\n") else value
        log.add_secret(value)
        self._values[secret] = value
        return value
