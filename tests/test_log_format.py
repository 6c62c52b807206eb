"""Log lines carry the request id of the request they belong to, as text or JSON."""

from __future__ import annotations

import json
import logging

from cache.logs import JsonFormatter, _RequestIdFilter, request_id


def _render(formatter: logging.Formatter) -> str:
    record = logging.LogRecord("banatie", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    _RequestIdFilter().filter(record)
    return formatter.format(record)


def test_json_lines_carry_the_request_id() -> None:
    token = request_id.set("req-42")
    try:
        line = json.loads(_render(JsonFormatter()))
    finally:
        request_id.reset(token)
    assert line["requestId"] == "req-42"
    assert line["message"] == "hello you" and line["level"] == "warning"
    assert line["ts"].endswith("Z")


def test_lines_outside_a_request_say_so() -> None:
    assert json.loads(_render(JsonFormatter()))["requestId"] == "-"
