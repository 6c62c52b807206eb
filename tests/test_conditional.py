"""edge/conditional.py: what one request's If-None-Match, Range and If-Range ask the edge to
send — the one decision the L1 path, the fast path and a streamed body all follow."""

from __future__ import annotations

import pytest

from cache.errors import RangeNotSatisfiable
from edge.conditional import conditional, etag_matches
from edge.request import Request

ETAG = '"abc"'


def request(**headers: str) -> Request:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request.read("GET", raw)


def test_no_conditions_send_the_whole_body() -> None:
    assert conditional(request(), ETAG, 100) == (200, 0, 99)


def test_a_matching_etag_is_not_modified_even_with_a_range() -> None:
    assert conditional(request(if_none_match=ETAG, range="bytes=0-9"), ETAG, 100)[0] == 304


def test_a_range_sends_its_span() -> None:
    assert conditional(request(range="bytes=10-19"), ETAG, 100) == (206, 10, 19)
    assert conditional(request(range="bytes=-10"), ETAG, 100) == (206, 90, 99)
    assert conditional(request(range="bytes=95-"), ETAG, 100) == (206, 95, 99)


def test_if_range_for_another_version_sends_it_all() -> None:
    assert conditional(request(range="bytes=0-9", if_range='"old"'), ETAG, 100)[0] == 200
    assert conditional(request(range="bytes=0-9", if_range=ETAG), ETAG, 100)[0] == 206


def test_a_range_past_the_body_is_416_naming_the_size() -> None:
    with pytest.raises(RangeNotSatisfiable) as refused:
        conditional(request(range="bytes=100-"), ETAG, 100)
    assert refused.value.status == 416
    assert refused.value.headers == {"Content-Range": "bytes */100"}


def test_etags_match_weakly_in_a_list_or_as_a_star() -> None:
    assert etag_matches(b'"x", W/"abc"', ETAG)
    assert etag_matches(b"*", ETAG)
    assert not etag_matches(b'"abcd"', ETAG)
