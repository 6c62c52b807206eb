"""Settings are read once from the environment; a value the service cannot use stops the
start with a message naming the variable."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from cache.settings import Settings, SettingsError, readme_table
from tests.running import ROOT, Banatie


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.port == Settings.port
    assert settings.objects_dir == Path("data/objects")  # under DATA_DIR
    assert settings.public_url == f"http://localhost:{Settings.port}"


def test_values_are_read_with_their_types() -> None:
    settings = Settings.from_env(
        {"PORT": "9000", "GENERATION_TIMEOUT_S": "2.5", "TRUSTED_PROXIES": "10.0.0.1, ::1"}
    )
    assert settings.port == 9000
    assert settings.generation_timeout_s == 2.5
    assert settings.trusted_proxies == ("10.0.0.1", "::1")
    assert settings.public_url == "http://localhost:9000"


def test_an_empty_value_means_the_default() -> None:
    assert Settings.from_env({"PORT": ""}).port == Settings.port


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "eighty"), ("MAX_UPLOAD_BYTES", "1.5"), ("GENERATION_TIMEOUT_S", "soon")],
)
def test_a_malformed_number_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value)
    assert repr(value) in str(caught.value)


def test_an_unknown_override_is_refused() -> None:
    with pytest.raises(SettingsError, match="unknown setting prot"):
        Settings.from_env({}, prot=8080)


def test_overrides_win_over_the_environment() -> None:
    settings = Settings.from_env({"PORT": "9000"}, port=9100)
    assert settings.port == 9100
    assert settings.public_url == "http://localhost:9100"  # the port given to the CLI counts


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("LOG_FORMAT", "jsn", "text, json"),
        ("LOG_LEVEL", "loud", "debug, info, warning, error, critical"),
        ("GENERATOR", "foo", "gemini, offline"),
        ("ERROR_IMAGES", "ture", "true or false"),
        ("BOOTSTRAP_DEFAULT_PROJECT", "nope", "true or false"),
        ("REDIS_URL", "bogus", "redis://, rediss://, unix://, redis+cluster://"),
        ("REDIS_URL", "http://127.0.0.1:6379", "redis://"),
        ("DATABASE_URL", "mysql://db/x", "postgresql+asyncpg://"),
        ("PUBLIC_URL", "cdn.example.com", "http://, https://"),
        ("ORIGIN_URL", "127.0.0.1:3001", "http://, https://"),
        ("MAX_UPLOAD_BYTES", "-1", "0 or more"),
        ("DISK_CACHE_BYTES", "-5", "0 or more"),
        ("PORT", "70000", "0 to 65535"),
        ("HEADER_TIMEOUT_S", "-1", "0 or more"),
        ("GENERATION_TIMEOUT_S", "nan", "0 or more"),
    ],
)
def test_a_malformed_value_names_the_variable_and_what_it_accepts(
    name: str, value: str, accepted: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value)
    assert repr(value) in str(caught.value)
    assert accepted in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://cache.example.com:6380",
        "unix:///run/redis.sock",
        "redis+cluster://10.0.0.1:7000",
        "redis://10.0.0.1:7000?cluster=true",
    ],
)
def test_every_redis_url_the_index_connects_to_is_accepted(url: str) -> None:
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


def test_accepted_spellings() -> None:
    settings = Settings.from_env(
        {
            "ERROR_IMAGES": "off",
            "BOOTSTRAP_DEFAULT_PROJECT": " No ",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": "postgresql+asyncpg://u@db:5432/x",
            "PUBLIC_URL": "https://cdn.example.com/",
        }
    )
    assert settings.error_images is False
    assert settings.bootstrap_default_project is False
    assert settings.log_level == "warning"
    assert settings.public_url == "https://cdn.example.com"  # paths are joined on it
    assert Settings.from_env({"ERROR_IMAGES": "1"}).error_images is True


def test_special_defaults() -> None:
    settings = Settings.from_env({"DATA_DIR": "/srv/banatie", "AWS_ACCESS_KEY_ID": "AKIA1"})
    assert settings.objects_dir == Path("/srv/banatie/objects")
    assert settings.disk_cache_dir == Path("/srv/banatie/disk-cache")
    assert settings.s3_access_key_id == "AKIA1"  # S3_ACCESS_KEY_ID empty: the AWS variable
    assert settings.disk_cache_bytes == 10 * 1024**3  # on in every layout
    assert Settings.from_env({"DISK_CACHE_BYTES": "0"}).disk_cache_bytes == 0
    assert Settings.from_env({"HOST": "10.1.2.3"}).public_url == "http://10.1.2.3:3000"
    with pytest.raises(FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_a_server_with_a_malformed_value_does_not_start(tmp_path: Path) -> None:
    app = Banatie("serve", tmp_path, env={"ERROR_IMAGES": "ture"})
    done = subprocess.run(
        [sys.executable, "-m", "banatie", "serve", "--port", str(app.port)],
        env=app.env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    message = done.stderr.decode()
    assert message.strip().splitlines() == [
        "banatie: ERROR_IMAGES must be true or false (or 1/0, yes/no, on/off), got 'ture'"
    ]


def _readme_rows(text: str) -> dict[str, str]:
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {
        line.split(" | ", 1)[0]: line
        for line in section.splitlines()
        if re.match(r"\| `[A-Z0-9_]+` \|", line)
    }


def test_the_readme_table_lists_exactly_the_declared_settings() -> None:
    """Each setting is declared once (cache/settings.py); README's row must match the
    declaration: `python -m cache.settings` prints the rows to paste."""
    readme = _readme_rows((ROOT / "README.md").read_text())
    declared = _readme_rows("## Configuration\n" + readme_table())
    assert sorted(readme) == sorted(declared), "README rows and declared settings differ"
    for variable, row in declared.items():
        assert readme[variable] == row, f"README row of {variable} differs from its declaration"
