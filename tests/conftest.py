"""Suite-wide: nothing a test runs may write outside its temp dirs.

The parser caches Lark's tables under ~/.cache/mdsl; point that (for this
process and every `mdsl` subprocess) at a temp dir removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_cache_dir = None


def pytest_configure(config):
    global _cache_dir
    _cache_dir = tempfile.mkdtemp(prefix="mdsl-test-cache-")
    os.environ["MDSL_CACHE_DIR"] = _cache_dir


def pytest_unconfigure(config):
    if _cache_dir:
        shutil.rmtree(_cache_dir, ignore_errors=True)
