"""Headless Chromium for the browser tests: Debian's `chromium` package driven by `playwright`
(never `playwright install`: there is no download). The `browser` fixture in conftest.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

# As root, without a sandbox; and no network of its own (updates, sync, QUIC probes).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXPECT_TIMEOUT_MS = 60_000  # a deadline for `expect(...)` conditions, not a wait
INSTALL = (
    "the browser tests need headless Chromium: install Debian's `chromium` package "
    "(apt-get install -y --no-install-recommends chromium; .ci/run does this)"
)


def chromium() -> Iterator[Browser]:
    """A launched Chromium, closed after; fails (never skips) when it is not installed."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(INSTALL)
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)  # its 5 s default is short on 2 busy cores
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
