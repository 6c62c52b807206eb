"""The canonical live key: same request → same key; anything else → another key."""

from __future__ import annotations

import pytest
import xxhash

from cache.live_key import image_key, live_key, manifest_key, normalise_prompt

BASE = dict(
    project_id="p1",
    scope="",
    prompt="a red fox",
    aspect_ratio="1:1",
    auto_enhance=True,
    template="general",
    model="m1",
)


def key(**changes: object):  # type: ignore[no-untyped-def]
    return live_key(**{**BASE, **changes})  # type: ignore[arg-type]


def test_prompt_is_nfc_normalised() -> None:
    decomposed = "cafe\u0301"
    composed = "caf\u00e9"
    assert normalise_prompt(decomposed) == composed
    assert key(prompt=decomposed).canonical == key(prompt=composed).canonical


def test_prompt_is_trimmed_and_inner_whitespace_collapsed() -> None:
    assert normalise_prompt("  a \t red\n\n fox  ") == "a red fox"
    assert key(prompt="  a \t red\n\n fox  ").digest == key().digest


def test_case_is_kept() -> None:
    assert key(prompt="A red fox").digest != key().digest


@pytest.mark.parametrize(
    "change",
    [
        {"project_id": "p2"},
        {"scope": "home"},
        {"prompt": "a red fox!"},
        {"aspect_ratio": "16:9"},
        {"auto_enhance": False},
        {"template": "sticker"},
        {"model": "m2"},
    ],
)
def test_any_other_field_gives_another_key(change: dict[str, object]) -> None:
    assert key(**change).canonical != key().canonical
    assert key(**change).digest != key().digest


def test_fields_cannot_blur_into_each_other() -> None:
    # A separator inside a field would let "a" + "b c" equal "a b" + "c"; it is whitespace.
    assert key(scope="x", prompt="y\x1fz").canonical != key(scope="x\x1fy", prompt="z").canonical


def test_digest_is_xxh3_128_hex_of_the_canonical_form() -> None:
    canonical = "v1\x1fp1\x1f\x1fa red fox\x1f1:1\x1f1\x1fgeneral\x1fm1"
    assert key().canonical == canonical
    assert key().digest == xxhash.xxh3_128(canonical.encode()).hexdigest()
    # Pinned: keys already in Redis and object storage must keep their names.
    assert key().digest == "a953b92f7cc2b9b0ac9e9a65cea47114"


def test_object_keys() -> None:
    assert manifest_key("org", "proj", "abc") == "org/proj/live/abc.json"
    assert image_key("org", "proj", "id1") == "org/proj/img/id1"
