"""Readers for the config files apps keep their settings in: a dotenv file (Mastodon's
`.env.production`, Immich's `.env`), a PHP array (Nextcloud's `config.php`), an INI file
(Gitea's `app.ini`) and YAML's block mappings and lists (Synapse's `homeserver.yaml`). Pure: text
in, a flat `{key: value}` out, never an exception for odd input (a line it cannot read is skipped:
a config file is the app's, not ours to reject).

Keys are flattened the way profiles name them: `KEY` for dotenv, `key` (and `key.0`, `key.sub`
for a nested array) for PHP, `section.KEY` for INI (keys before the first section: `KEY`), `a.b`
and `a.0` for YAML.
"""

from __future__ import annotations

import re
from typing import Dict, Iterator, List, Optional, Tuple

from mdsl.apps.profile import CONFIG_FORMATS as FORMATS  # noqa: F401 - one home: the profiles' schema

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$")


def _unquote_env(raw: str) -> str:
    if raw[:1] in ("'", '"'):
        quote = raw[0]
        end = raw.find(quote, 1)
        while quote == '"' and end > 0 and raw[end - 1] == "\\":
            end = raw.find(quote, end + 1)
        if end > 0:
            inner = raw[1:end]
            if quote == '"':
                inner = inner.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
            return inner
        return raw[1:]
    # an unquoted value ends at ` #` (a comment), as dotenv reads it
    cut = re.search(r"\s+#", raw)
    return (raw[: cut.start()] if cut else raw).strip()


def parse_env(text: str) -> Dict[str, str]:
    """`KEY=value` lines (optional `export`, quotes, `#` comments); the last of a repeated key wins."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if m:
            out[m.group(1)] = _unquote_env(m.group(2))
    return out


def parse_ini(text: str) -> Dict[str, str]:
    """`[section]` and `KEY = value` lines (`;`/`#` comments, values quoted with ` or " unquoted)."""
    out: Dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in ";#":
            continue
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1].strip()
            continue
        key, sep, value = s.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "`\"'":
            value = value[1:-1]
        key = key.strip()
        out[f"{section}.{key}" if section else key] = value
    return out


# ---------------------------------------------------------------- PHP

_PHP_TOKEN = re.compile(r"""
    (?P<space>\s+|//[^\n]*|\#[^\n]*|/\*.*?\*/)
  | (?P<sq>'(?:[^'\\]|\\.)*')
  | (?P<dq>"(?:[^"\\]|\\.)*")
  | (?P<arrow>=>)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[\[\](),;=$])
  | (?P<other>.)
""", re.S | re.X)


def _php_tokens(text: str) -> Iterator[Tuple[str, str]]:
    for m in _PHP_TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "space":
            continue
        value = m.group()
        if kind == "sq":
            yield "str", re.sub(r"\\([\\'])", r"\1", value[1:-1])
        elif kind == "dq":
            yield "str", value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        else:
            yield kind, value


class _PhpArray:
    """A recursive reader of one `array(...)` / `[...]` literal of scalars and arrays."""

    def __init__(self, tokens: List[Tuple[str, str]]):
        self.toks, self.i = tokens, 0

    def peek(self) -> Tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self) -> Tuple[str, str]:
        tok = self.peek()
        self.i += 1
        return tok

    def value(self):
        kind, text = self.take()
        if kind == "str":
            return text
        if kind == "num":
            return text
        if kind == "word" and text.lower() == "array" and self.peek()[1] == "(":
            self.take()
            return self.items(")")
        if kind == "punct" and text == "[":
            return self.items("]")
        if kind == "word":
            return {"true": True, "false": False, "null": None}.get(text.lower(), text)
        return None

    def items(self, close: str) -> Dict[str, object]:
        out: Dict[str, object] = {}
        index = 0
        while self.peek()[1] != close and self.peek()[0] != "end":
            first = self.value()
            if self.peek()[0] == "arrow":
                self.take()
                out[str(first)] = self.value()
            else:
                out[str(index)] = first
                index += 1
            if self.peek()[1] == ",":
                self.take()
            elif self.peek()[1] != close:
                self.take()  # something we do not read (a constant expression): skip it
        self.take()
        return out


def _flatten(prefix: str, value, out: Dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(value, bool):
        out[prefix] = "true" if value else "false"
    elif value is not None:
        out[prefix] = str(value)


def parse_php(text: str) -> Dict[str, str]:
    """The `$CONFIG = array(...)` (or `[...]`) of a Nextcloud config.php, flattened."""
    toks = list(_php_tokens(text))
    for i in range(len(toks) - 3):
        if toks[i] == ("punct", "$") and toks[i + 1] == ("word", "CONFIG") and toks[i + 2] == ("punct", "="):
            reader = _PhpArray(toks[i + 3:])
            value = reader.value()
            out: Dict[str, str] = {}
            if isinstance(value, dict):
                _flatten("", value, out)
            return out
    return {}


# ---------------------------------------------------------------- YAML

_YAML_KEY = re.compile(r"""^(?P<key>"[^"]*"|'[^']*'|[^\s#'"][^:#]*?)\s*:(?:\s+(?P<value>.*))?$""")


def _yaml_scalar(raw: str) -> str:
    raw = raw.strip()
    if raw[:1] in ("'", '"'):
        end = raw.find(raw[0], 1)
        return raw[1:end] if end > 0 else raw[1:]
    cut = re.search(r"\s+#", raw)
    return (raw[: cut.start()] if cut else raw).strip()


def parse_yaml(text: str) -> Dict[str, str]:
    """YAML's block mappings and `- ` lists of scalars, by indentation (what config files use);
    flow collections, anchors and multi-line scalars are skipped, never guessed at."""
    out: Dict[str, str] = {}
    stack: List[Tuple[int, str]] = []  # (indent, dotted key) of the open mappings
    counters: Dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "---", "...")):
            continue
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        while stack and stack[-1][0] >= indent and not (body.startswith("- ") and stack[-1][0] == indent):
            stack.pop()
        parent = stack[-1][1] if stack else ""
        if body.startswith("- ") or body == "-":
            n = counters.get(parent, 0)
            counters[parent] = n + 1
            item = f"{parent}.{n}" if parent else str(n)
            rest = body[2:].strip()
            m = _YAML_KEY.match(rest)
            if m:  # `- key: value` opens a mapping inside the list
                stack.append((indent + 1, item))
                key, value = _yaml_scalar(m.group("key")), m.group("value")
                if value and value[:1] not in "|>&*[{":
                    out[f"{item}.{key}"] = _yaml_scalar(value)
            elif rest and rest[:1] not in "|>&*[{":
                out[item] = _yaml_scalar(rest)
            continue
        m = _YAML_KEY.match(body)
        if not m:
            continue
        key = f"{parent}.{_yaml_scalar(m.group('key'))}" if parent else _yaml_scalar(m.group("key"))
        value = m.group("value")
        if value is None or value.startswith("#"):
            stack.append((indent, key))
        elif value[:1] not in "|>&*[{":
            out[key] = _yaml_scalar(value)
    return out


def parse(text: str, fmt: str) -> Dict[str, str]:
    """The settings of a config file in format `fmt` (one of FORMATS)."""
    return {"env": parse_env, "php": parse_php, "ini": parse_ini, "yaml": parse_yaml}[fmt](text)


def lookup(settings: Dict[str, str], key: Optional[str]) -> Optional[str]:
    """settings[key], case-insensitively for INI-style `section.KEY` keys; None when absent or empty."""
    if not key:
        return None
    if settings.get(key):
        return settings[key]
    low = key.lower()
    for k, v in settings.items():
        if k.lower() == low and v:
            return v
    return None
