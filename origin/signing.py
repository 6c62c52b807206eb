"""Signed live URLs at the origin: a project's requirement, its secrets, and minting URLs.

A project has at most two secrets that verify: the current one (used to sign) and the one it
replaced at the last rotation. So a rotation breaks no URL already out there; the one before
that stops verifying. The secrets are stored as they are (HMAC needs them), shown only once
when minted, and reach edges with the project reference (`ProjectRef.signing_secrets`).

What is covered: `/cdn/{org}/{project}/live/{scope}`, where a miss can spend a generation.
Not covered: `/cdn/.../img/{id|@alias}` (serves existing images only, never generates; ids
are random UUIDs handed out as `storageUrl`) and `/api/v1/live` (it has an API key).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from cache import signing
from cache.errors import Conflict, ProjectNotFound, ValidationError
from cache.live_key import SCOPE_PATTERN
from origin.envelope import iso, optional_bool, optional_int
from origin.generation_input import check_prompt, check_ratio, check_template
from origin.models import Project, utcnow

MAX_EXPIRES_IN_S = 10 * 365 * 24 * 3600
MAX_URL_CHARS = 16 * 1024
LIVE_FIELDS = ("scope", "prompt", "aspectRatio", "autoEnhance", "template")


class SigningSecretMissing(Conflict):
    code = "SIGNING_SECRET_MISSING"


def active_secrets(project: Project) -> tuple[str, ...]:
    """The secrets that verify, the current one first."""
    return tuple(s for s in (project.signing_secret, project.previous_signing_secret) if s)


def rotate(project: Project) -> str:
    """A new current secret; the current one becomes the previous, the previous is dropped."""
    secret = signing.new_secret()
    project.previous_signing_secret = project.signing_secret
    project.previous_signing_secret_created_at = project.signing_secret_created_at
    project.signing_secret = secret
    project.signing_secret_created_at = utcnow()
    return secret


def set_required(project: Project, required: bool) -> None:
    if required and not project.signing_secret:
        raise SigningSecretMissing(
            "Create a signing secret first: POST /api/v1/live/signing/rotate."
        )
    project.require_signed_urls = required


def state_json(project: Project) -> dict[str, Any]:
    """The project's signing state; never the secrets themselves."""
    secrets = []
    for role, secret, created in (
        ("current", project.signing_secret, project.signing_secret_created_at),
        ("previous", project.previous_signing_secret, project.previous_signing_secret_created_at),
    ):
        if secret:
            secrets.append({"role": role, "createdAt": iso(created), "hint": secret[-4:]})
    return {"requireSignedUrls": project.require_signed_urls, "secrets": secrets}


@dataclass(frozen=True, slots=True)
class LiveUrl:
    path: str  # decoded, e.g. /cdn/acme/web/live/hero
    pairs: list[tuple[str, str]]


def live_url(org: str, project: str, scope: object, query: list[tuple[str, str]]) -> LiveUrl:
    """`scope` as the client gave it (any JSON value): checked here."""
    if not isinstance(scope, str) or not SCOPE_PATTERN.fullmatch(scope):
        raise ValidationError("scope must match [A-Za-z0-9_-]{1,64}.", field="scope")
    return LiveUrl(f"/cdn/{org}/{project}/live/{scope}", query)


def parse_live_url(url: str, org: str, project: str, field: str = "path") -> LiveUrl:
    """A live CDN URL or path of this project; another project's is not found (404)."""
    if len(url) > MAX_URL_CHARS:
        raise ValidationError(f"{field} is longer than {MAX_URL_CHARS} characters.", field=field)
    parts = urlsplit(url)
    segments = unquote(parts.path).split("/")
    if len(segments) != 6 or segments[:2] != ["", "cdn"] or segments[4] != "live":
        raise ValidationError(
            f"{field} must be a live URL: /cdn/{{org}}/{{project}}/live/{{scope}}?prompt=...",
            field=field,
        )
    if (segments[2], segments[3]) != (org, project):
        raise ProjectNotFound("No such project.")
    try:
        pairs = signing.query_pairs(parts.query)
    except ValueError:
        raise ValidationError(f"{field} has a query that is not UTF-8.", field=field) from None
    return live_url(org, project, segments[5], pairs)


def live_url_from_body(body: dict[str, Any], org: str, project: str) -> LiveUrl:
    """`path` (a live URL or path), or `scope` + `prompt` and the other live parameters."""
    if "path" in body:  # null too: a client that sends the field means it
        path = body["path"]
        if not isinstance(path, str):
            raise ValidationError("path must be a string: a live URL or path.", field="path")
        both = [f for f in LIVE_FIELDS if body.get(f) is not None]
        if both:
            raise ValidationError(f"Give either path or {both[0]}, not both.", field=both[0])
        return parse_live_url(path, org, project)
    query = [("prompt", check_prompt(body.get("prompt")))]
    if body.get("aspectRatio") is not None:
        query.append(("aspectRatio", check_ratio(body["aspectRatio"])))
    if body.get("autoEnhance") is not None:
        enhance = optional_bool(body, "autoEnhance", True)
        query.append(("autoEnhance", "true" if enhance else "false"))
    if body.get("template") is not None:
        query.append(("template", check_template(body["template"], "template")))
    return live_url(org, project, body.get("scope"), query)


def expires_in(body: dict[str, Any]) -> int | None:
    return optional_int(body, "expiresInSeconds", None, 1, MAX_EXPIRES_IN_S)


def sign_live_url(
    project: Project, url: LiveUrl, expires_in_s: int | None, now: float | None = None
) -> tuple[str, int | None]:
    """The signed path (path?query&sig=...) and its expiry in epoch seconds."""
    if not project.signing_secret:
        raise SigningSecretMissing(
            "This project has no signing secret yet: POST /api/v1/live/signing/rotate."
        )
    expires_at = None
    if expires_in_s is not None:
        expires_at = int(time.time() if now is None else now) + expires_in_s
    return signing.sign(project.signing_secret, url.path, url.pairs, expires_at), expires_at
