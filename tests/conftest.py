"""Shared pytest fixtures."""


# --- Fake Gemini (tests/fake_gemini.py) ----------------------------------------------------

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tests.fake_gemini import FakeGemini, FakeGeminiServer  # noqa: E402


@pytest.fixture(scope="session")
def fake_gemini() -> Iterator[FakeGeminiServer]:
    """One fake Gemini server on loopback for the whole session."""
    server = FakeGeminiServer().start()
    yield server
    server.stop()


@pytest.fixture
def gemini(fake_gemini: FakeGeminiServer) -> Iterator[FakeGemini]:
    """The session's fake Gemini, reset before and after each test; `.url` is its base URL."""
    fake_gemini.fake.reset()
    yield fake_gemini.fake
    fake_gemini.fake.reset()
