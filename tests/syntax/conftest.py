"""Fixtures for the syntax tests."""

import pytest

from syntax_helpers import language_example


@pytest.fixture(scope="session")
def example_text() -> str:
    """The plan language reference's example plan."""
    return language_example()
