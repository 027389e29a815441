"""Fixtures for the runner tests."""

from __future__ import annotations

import pytest

from run_helpers import demo_copy, stop_demo
from mdsl.run import log


@pytest.fixture
def demo(tmp_path):
    """(plan path, root folder) of a private demo; every app it started is stopped afterwards."""
    plan, root = demo_copy(tmp_path)
    try:
        yield plan, root
    finally:
        stop_demo(root)


@pytest.fixture(autouse=True)
def forget_secrets():
    """Secrets remembered for redaction do not leak from one test into another."""
    yield
    log.clear_secrets()
