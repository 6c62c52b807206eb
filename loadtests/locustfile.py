"""Locust scenarios for banatie: page views, the management API, and a herd on one new key.

Run locust as its own process against a running server (never import this from app or test
code: locust monkey-patches the standard library). Pick a scenario by its class name:

    locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:3000 \\
        -u 50 -r 10 -t 1m PageViewUser
    BANATIE_KEY=bnt_... locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:3000 \\
        -u 10 -r 5 -t 1m ManagementUser
    locust -f loadtests/locustfile.py --headless -H http://127.0.0.1:3000 \\
        -u 300 -r 300 -t 2m HerdUser

Environment: BANATIE_ORG, BANATIE_PROJECT (default/default), BANATIE_SCOPE (loadtest),
BANATIE_PROMPTS (1000), BANATIE_ZIPF_S (1.0), BANATIE_NEW_SHARE (0.05), BANATIE_PROMPT_SET
(names the prompt universe; change it for a cold cache), BANATIE_KEY (management API),
BANATIE_HERD_PROMPT (the herd's prompt; set it when running distributed).
The server must allow the misses: raise IP_BUDGET_PER_HOUR, DEFAULT_SCOPE_LIMIT and
KEY_BUDGET_PER_HOUR for the run, or most new prompts get 429/403.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import struct
import time
import uuid
import zlib
from collections import Counter
from typing import Any
from urllib.parse import quote

import gevent
from gevent.event import Event
from gevent.pool import Pool
from locust import FastHttpUser, between, constant, events, task
from locust.exception import StopUser

ORG = os.environ.get("BANATIE_ORG", "default")
PROJECT = os.environ.get("BANATIE_PROJECT", "default")
SCOPE = os.environ.get("BANATIE_SCOPE", "loadtest")
PROMPTS = int(os.environ.get("BANATIE_PROMPTS", "1000"))
ZIPF_S = float(os.environ.get("BANATIE_ZIPF_S", "1.0"))
NEW_SHARE = float(os.environ.get("BANATIE_NEW_SHARE", "0.05"))
PROMPT_SET = os.environ.get("BANATIE_PROMPT_SET", "v1")
HERD_PROMPT = os.environ.get("BANATIE_HERD_PROMPT") or f"locust herd {uuid.uuid4().hex[:12]}"
IMAGES_PER_PAGE = 20
BROWSER_CONNECTIONS = 6  # what a browser opens per host

# Zipf over the prompt ranks: rank r is drawn with weight 1 / r**s.
_CUMULATIVE = list(itertools.accumulate(1 / r**ZIPF_S for r in range(1, PROMPTS + 1)))
_RANKS = range(PROMPTS)

cache_status: Counter[str] = Counter()


def live_url(prompt: str) -> str:
    return f"/cdn/{ORG}/{PROJECT}/live/{SCOPE}?prompt={quote(prompt, safe='')}"


def draw_page() -> list[tuple[str, str]]:
    """20 (prompt, kind) pairs: Zipf-popular known prompts and ~5 % never seen before."""
    page = []
    for rank in random.choices(_RANKS, cum_weights=_CUMULATIVE, k=IMAGES_PER_PAGE):
        if random.random() < NEW_SHARE:
            page.append((f"locust new {uuid.uuid4().hex}", "new"))
        else:
            page.append((f"locust {PROMPT_SET} prompt {rank}", "known"))
    return page


class PageViewUser(FastHttpUser):
    """A visitor opening a page with 20 live images, fetched 6 at a time like a browser."""

    wait_time = between(1, 3)
    concurrency = BROWSER_CONNECTIONS

    @task
    def page_view(self) -> None:
        started = time.perf_counter()
        pool = Pool(BROWSER_CONNECTIONS)
        for prompt, kind in draw_page():
            pool.spawn(self._image, prompt, kind)
        pool.join()
        events.request.fire(
            request_type="PAGE",
            name=f"page of {IMAGES_PER_PAGE} images",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=None,
            context={},
        )

    def _image(self, prompt: str, kind: str) -> None:
        with self.client.get(
            live_url(prompt), name=f"live image ({kind})", catch_response=True
        ) as response:
            status = response.headers.get("x-cache-status", "-") if response.headers else "-"
            cache_status[f"{kind} {response.status_code} {status}"] += 1
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")


def _png(rgb: tuple[int, int, int], side: int = 16) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = (b"\x00" + bytes(rgb) * side) * side
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _multipart(fields: dict[str, tuple[str, bytes, str] | str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data, content_type = value
            head = (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            )
        else:
            data = value.encode()
            head = f'Content-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"--{boundary}\r\n{head}".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class ManagementUser(FastHttpUser):
    """A client of the REST API: generate, list, upload, alias and delete images."""

    wait_time = between(0.5, 2)

    def on_start(self) -> None:
        key = os.environ.get("BANATIE_KEY", "")
        if not key:
            raise RuntimeError("set BANATIE_KEY to a project key (banatie keys create)")
        self.auth = {"X-API-Key": key}
        self.uploaded: list[str] = []

    @task(4)
    def list_generations(self) -> None:
        self.client.get("/api/v1/generations?limit=20", headers=self.auth, name="list generations")

    @task(2)
    def list_images(self) -> None:
        self.client.get("/api/v1/images?limit=20", headers=self.auth, name="list images")

    @task(1)
    def create_generation(self) -> None:
        prompt = f"locust management {uuid.uuid4().hex[:12]}"
        body = {"prompt": prompt, "aspectRatio": "1:1", "autoEnhance": False}
        self.client.post(
            "/api/v1/generations", json=body, headers=self.auth, name="create generation"
        )

    @task(2)
    def upload(self) -> None:
        png = _png((random.randrange(256), random.randrange(256), random.randrange(256)))
        body, content_type = _multipart(
            {"file": ("locust.png", png, "image/png"), "meta": json.dumps({"by": "locust"})}
        )
        headers = {**self.auth, "Content-Type": content_type}
        with self.client.post(
            "/api/v1/images/upload", data=body, headers=headers, name="upload image",
            catch_response=True,
        ) as response:  # fmt: skip
            if response.status_code == 201:
                self.uploaded.append(response.json()["data"]["id"])
            else:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")

    @task(1)
    def alias(self) -> None:
        if not self.uploaded:
            return
        image_id = random.choice(self.uploaded)
        alias = {"alias": f"@lt-{uuid.uuid4().hex[:10]}"}
        self.client.put(
            f"/api/v1/images/{image_id}/alias", json=alias, headers=self.auth, name="set alias"
        )

    @task(1)
    def delete(self) -> None:
        if not self.uploaded:
            return
        image_id = self.uploaded.pop(random.randrange(len(self.uploaded)))
        self.client.delete(f"/api/v1/images/{image_id}", headers=self.auth, name="delete image")


# -- the herd: every user asks for one new prompt at the same moment ---------------------------

_everyone_here = Event()
_herd: list[tuple[float, int, str]] = []  # (done at, status, X-Cache-Status)
_herd_sent: list[float] = []


@events.spawning_complete.add_listener
def _release_herd(user_count: int, **_: Any) -> None:
    _everyone_here.set()


class HerdUser(FastHttpUser):
    """Waits until all users are spawned, then asks for HERD_PROMPT once and stops."""

    wait_time = constant(0)

    @task
    def herd(self) -> None:
        _everyone_here.wait()
        _herd_sent.append(time.perf_counter())
        with self.client.get(
            live_url(HERD_PROMPT), name="live image (herd)", catch_response=True
        ) as response:
            status = response.headers.get("x-cache-status", "-") if response.headers else "-"
            _herd.append((time.perf_counter(), response.status_code, status))
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
        runner = self.environment.runner
        if runner is not None and len(_herd) >= runner.user_count:
            gevent.spawn_later(0.5, runner.quit)  # everyone answered: end the run
        raise StopUser()


@events.test_stop.add_listener
def _summary(**_: Any) -> None:
    if cache_status:
        print("\nlive images by kind, status and X-Cache-Status:")
        for key, count in sorted(cache_status.items()):
            print(f"  {key:<28} {count}")
    if _herd:
        done = sorted(t for t, _, _ in _herd)
        statuses = Counter(f"{s} {c}" for _, s, c in _herd)
        print(
            f"\nherd on {HERD_PROMPT!r}: {len(_herd)} answers {dict(statuses)}; "
            f"first after {done[0] - min(_herd_sent):.3f} s, "
            f"last {1000 * (done[-1] - done[0]):.1f} ms after the first"
        )
