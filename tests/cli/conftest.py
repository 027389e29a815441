"""Fixtures for the CLI tests."""

from __future__ import annotations

import pytest

from cli_helpers import CLEAN_PLAN, UNRESOLVED_PLAN


@pytest.fixture(autouse=True)
def no_color_env(monkeypatch):
    """Tests decide about color themselves."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("MDSL_DEBUG", raising=False)


@pytest.fixture
def clean_plan(tmp_path):
    """A plan no checker can object to."""
    p = tmp_path / "clean.plan"
    p.write_text(CLEAN_PLAN, encoding="utf-8")
    return str(p)


@pytest.fixture
def unresolved_plan(tmp_path):
    """A plan with unknown names (E102)."""
    p = tmp_path / "unresolved.plan"
    p.write_text(UNRESOLVED_PLAN, encoding="utf-8")
    return str(p)


@pytest.fixture
def write_plan(tmp_path):
    """write_plan(text, name='x.plan') -> path."""

    def write(text, name="x.plan"):
        p = tmp_path / name
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text, encoding="utf-8")
        return str(p)

    return write
