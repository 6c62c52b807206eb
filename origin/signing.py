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
from urllib.parse import unquote, urlsplit

from cache import signing
from cache.errors import Conflict, ProjectNotFound, ValidationError
from cache.live_key import SCOPE_PATTERN
from origin.envelope import iso
from origin.models import Project, utcnow
from origin.schemas.requests import SignBody
from origin.schemas.responses import Secret, SigningState


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


def state_json(project: Project) -> SigningState:
    """The project's signing state; never the secrets themselves."""
    secrets = []
    for role, secret, created in (
        ("current", project.signing_secret, project.signing_secret_created_at),
        ("previous", project.previous_signing_secret, project.previous_signing_secret_created_at),
    ):
        if secret:
            secrets.append(Secret(role=role, created_at=iso(created), hint=secret[-4:]))
    return SigningState(require_signed_urls=project.require_signed_urls, secrets=secrets)


@dataclass(frozen=True, slots=True)
class LiveUrl:
    path: str  # decoded, e.g. /cdn/acme/web/live/hero
    pairs: list[tuple[str, str]]


def live_url(org: str, project: str, scope: object, query: list[tuple[str, str]]) -> LiveUrl:
    """`scope` as the client gave it (any JSON value): checked here."""
    if not isinstance(scope, str) or not SCOPE_PATTERN.fullmatch(scope):
        raise ValidationError(f"scope must match {SCOPE_PATTERN.pattern}.", field="scope")
    return LiveUrl(f"/cdn/{org}/{project}/live/{scope}", query)


def parse_live_url(url: str, org: str, project: str, field: str = "path") -> LiveUrl:
    """A live CDN URL or path of this project; another project's is not found (404)."""
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


def live_url_from_body(body: SignBody, org: str, project: str) -> LiveUrl:
    """`path` (a live URL or path), or `scope` + `prompt` and the other live parameters."""
    if body.path is not None:
        return parse_live_url(body.path, org, project)
    assert body.prompt is not None  # SignBody asks for it without a path
    query = [("prompt", body.prompt)]
    if body.aspect_ratio is not None:
        query.append(("aspectRatio", body.aspect_ratio))
    if body.auto_enhance is not None:
        query.append(("autoEnhance", "true" if body.auto_enhance else "false"))
    if body.template is not None:
        query.append(("template", body.template))
    return live_url(org, project, body.scope, query)


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
