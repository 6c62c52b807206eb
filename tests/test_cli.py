"""The `banatie` command line (banatie/cli.py), run as a real process.

Serving is covered wherever a test starts a server (tests/running.py); `gc` in
test_reliability.py, `sign-url` in test_signing.py. Here: what every command shares — the
list of commands, and a bad argument or environment said in one line with exit status 2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.running import ROOT, Banatie

COMMANDS = ("serve", "origin", "edge", "migrate", "bench", "gc", "keys", "sign-url")


def banatie(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`banatie ARGS` with a fresh data directory; its exit status and output."""
    environment = {**Banatie("serve", data_dir).env, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "banatie", *args],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_every_command(tmp_path: Path) -> None:
    done = banatie(tmp_path, "--help")
    assert done.returncode == 0
    for command in COMMANDS:
        assert command in done.stdout


def test_an_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    done = banatie(tmp_path, "frobnicate")
    assert done.returncode == 2
    assert "invalid choice: 'frobnicate'" in done.stderr


def test_migrate_twice_is_up_to_date(tmp_path: Path) -> None:
    for _ in range(2):
        done = banatie(tmp_path, "migrate")
        assert done.returncode == 0, done.stderr
        assert "database is up to date" in done.stderr


def test_a_created_key_authenticates(tmp_path: Path) -> None:
    app = Banatie("serve", tmp_path)
    key = app.cli("keys", "create", "--org", "acme", "--project", "web").split()[0]
    app.start()
    try:
        answer = httpx.get(app.url + "/api/v1/images", headers={"X-API-Key": key})
    finally:
        app.stop()
    assert answer.status_code == 200, answer.text


def test_a_bad_slug_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    done = banatie(tmp_path, "keys", "create", "--org", "Bad Org")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "banatie keys: --org must be 1-64 lowercase letters, digits, '-' or '_'."
    )


def test_a_key_lifetime_outside_its_bounds_is_refused(tmp_path: Path) -> None:
    for days in ("-3", "0", "3651", "soon"):
        done = banatie(tmp_path, "keys", "create", "--expires-in-days", days)
        assert done.returncode == 2, days
        assert "a whole number of days from 1 to 3650" in done.stderr
        assert "bnt_" not in done.stdout  # no key was minted


def test_a_malformed_setting_names_the_variable(tmp_path: Path) -> None:
    done = banatie(tmp_path, "migrate", env={"LOG_FORMAT": "jsn"})
    assert done.returncode == 2
    assert done.stderr.strip() == "banatie: LOG_FORMAT must be one of text, json, got 'jsn'"
