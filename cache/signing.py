"""Signed live URLs: HMAC-SHA256 over the path and the canonical query.

The string to sign is `path + "?" + canonical_query`, where

- `path` is the URL path, percent-decoded (ASGI's `scope["path"]`), e.g.
  `/cdn/acme/web/live/hero`;
- `canonical_query` is the query string taken apart and put back together in one way:
  1. split the raw query on `&`, skipping empty pieces;
  2. split each piece at its first `=` into name and value (no `=`: the value is empty);
  3. in both, `+` becomes a space, then percent-escapes are decoded and the bytes read as
     UTF-8 (a query that is not UTF-8 cannot be signed, so it never verifies);
  4. every pair named `sig` is dropped (`expires` stays: it is signed like any parameter);
  5. the pairs are sorted by name, then value, in Unicode code-point order;
  6. each name and value is written back as UTF-8 with every byte outside the RFC 3986
     unreserved set `A-Z a-z 0-9 - . _ ~` percent-encoded in upper-case hex (a space is
     `%20`), joined as `name=value`, the pairs joined with `&`.

`sig` is the lower-case hex HMAC-SHA256 of the UTF-8 string to sign, keyed by the project's
signing secret (its UTF-8 bytes). `expires`, when present, is a decimal count of seconds since
the epoch; the URL is refused from that second on. Every parameter counts: adding one (even a
tracking parameter) to a signed URL invalidates it, which is what stops a signed URL from
being bent into another image.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from urllib.parse import quote, unquote_to_bytes

from cache.errors import SignatureExpired, SignatureInvalid, SignatureRequired

SIG = "sig"
EXPIRES = "expires"
SECRET_PREFIX = "bns_"
_MISMATCH = "The signature does not match this URL."


_EPOCH_SECONDS = re.compile(r"[0-9]{1,12}")


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_bytes(32).hex()


def query_pairs(raw: bytes | str) -> list[tuple[str, str]]:
    """The decoded (name, value) pairs of a raw query string, in order; ValueError if not UTF-8."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    pairs = []
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        try:
            pairs.append(
                (
                    unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8"),
                    unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8"),
                )
            )
        except UnicodeDecodeError:
            raise ValueError("the query string is not UTF-8") from None
    return pairs


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Steps 4-6 above: without `sig`, sorted, every non-unreserved byte escaped."""
    kept = sorted((n, v) for n, v in pairs if n != SIG)
    return "&".join(f"{_escape(n)}={_escape(v)}" for n, v in kept)


def signature(secret: str, path: str, canonical: str) -> str:
    message = f"{path}?{canonical}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(
    secret: str, path: str, pairs: Iterable[tuple[str, str]], expires_at: int | None = None
) -> str:
    """`path?query&sig=...` for the pairs (any old `sig`/`expires` replaced)."""
    kept = [(n, v) for n, v in pairs if n not in (SIG, EXPIRES)]
    if expires_at is not None:
        kept.append((EXPIRES, str(int(expires_at))))
    canonical = canonical_query(kept)
    sig = signature(secret, path, canonical)
    return f"{path}?{canonical}&{SIG}={sig}" if canonical else f"{path}?{SIG}={sig}"


def verify(
    secrets_: Iterable[str], path: str, raw_query: bytes | str, now: float | None = None
) -> int | None:
    """Check a request's `sig` against each secret; its `expires` (or None). Raises
    SignatureRequired (unsigned), SignatureInvalid (tampered) or SignatureExpired."""
    try:
        pairs = query_pairs(raw_query)
    except ValueError:
        raise SignatureInvalid(_MISMATCH) from None
    sent = [v for n, v in pairs if n == SIG]
    if not sent:
        raise SignatureRequired("This project serves signed URLs only; sig is missing.")
    if len(sent) != 1:
        raise SignatureInvalid(_MISMATCH)
    canonical = canonical_query(pairs)
    given = sent[0].encode()
    matched = False
    for secret in secrets_:
        # Every secret is tried (no early exit), each compared in constant time.
        matched |= hmac.compare_digest(signature(secret, path, canonical).encode(), given)
    if not matched:
        raise SignatureInvalid(_MISMATCH)
    expires = [v for n, v in pairs if n == EXPIRES]
    if not expires:
        return None
    if len(expires) != 1 or not _EPOCH_SECONDS.fullmatch(expires[0]):
        raise SignatureInvalid(_MISMATCH)
    expires_at = int(expires[0])
    if (time.time() if now is None else now) >= expires_at:
        raise SignatureExpired("This signed URL has expired.")
    return expires_at


def _escape(text: str) -> str:
    return quote(text, safe="-._~")
