"""Settings are read once from the environment; a value the service cannot use stops the
start with a message naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache.settings import Settings, SettingsError


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
