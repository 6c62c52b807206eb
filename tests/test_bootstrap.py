"""POST /api/bootstrap/initial-key: open only while no key exists, and only to this machine
or to the token printed at start."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from origin.app import create_origin
from origin.keys import create_key
from origin.services import Services, open_services
from tests.harness import make_settings
from tests.running import Banatie
from tests.waiting import wait_until

BOOTSTRAP = "/api/bootstrap/initial-key"
TOKEN = "token-printed-at-start"


@dataclass
class EmptyOrigin:
    """An origin on an empty database, reached from any socket address."""

    app: Any
    services: Services

    @contextlib.asynccontextmanager
    async def client(self, address: str) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=self.app, client=(address, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://origin") as http:
            yield http


@contextlib.asynccontextmanager
async def empty_origin(tmp_path: Path, **overrides: Any) -> AsyncIterator[EmptyOrigin]:
    settings = make_settings(tmp_path, bootstrap_token=TOKEN, **overrides)
    services = await open_services(settings)
    try:
        yield EmptyOrigin(create_origin(settings, services), services)
    finally:
        await services.close()


@pytest.fixture
async def origin(tmp_path: Path) -> AsyncIterator[EmptyOrigin]:
    async with empty_origin(tmp_path) as value:
        yield value


def refused(response: httpx.Response) -> bool:
    return response.status_code == 403 and response.json()["error"]["code"] == "FORBIDDEN"


async def test_loopback_client_creates_the_first_master_key_once(origin: EmptyOrigin) -> None:
    async with origin.client("127.0.0.1") as http:
        response = await http.post(BOOTSTRAP)
        assert response.status_code == 201, response.text
        data = response.json()["data"]
        assert re.fullmatch(r"bnt_[0-9a-f]{64}", data["key"]) and data["type"] == "master"
        keys = await http.get("/api/admin/keys", headers={"X-API-Key": data["key"]})
        assert keys.status_code == 200
        assert refused(await http.post(BOOTSTRAP))
        assert refused(await http.post(BOOTSTRAP, headers={"X-Bootstrap-Token": TOKEN}))


@pytest.mark.parametrize("address", ["127.0.0.2", "::1", "::ffff:127.0.0.1"])
async def test_every_loopback_address_is_this_machine(origin: EmptyOrigin, address: str) -> None:
    async with origin.client(address) as http:
        assert (await http.post(BOOTSTRAP)).status_code == 201


async def test_remote_client_without_token_is_refused(origin: EmptyOrigin) -> None:
    async with origin.client("198.51.100.7") as http:
        response = await http.post(BOOTSTRAP)
        assert refused(response)
        assert "X-Bootstrap-Token" in response.json()["error"]["message"]


async def test_remote_client_with_the_token_creates_the_master_key(origin: EmptyOrigin) -> None:
    async with origin.client("198.51.100.7") as http:
        response = await http.post(BOOTSTRAP, headers={"X-Bootstrap-Token": TOKEN})
        assert response.status_code == 201 and response.json()["data"]["type"] == "master"
        assert refused(await http.post(BOOTSTRAP, headers={"X-Bootstrap-Token": TOKEN}))


async def test_wrong_token_is_refused_even_from_loopback(origin: EmptyOrigin) -> None:
    async with origin.client("127.0.0.1") as http:
        assert refused(await http.post(BOOTSTRAP, headers={"X-Bootstrap-Token": "guess"}))
        assert refused(await http.post(BOOTSTRAP, headers={"X-Bootstrap-Token": ""}))


async def test_client_behind_a_local_trusted_proxy_is_judged_by_its_own_address(
    tmp_path: Path,
) -> None:
    async with empty_origin(tmp_path, trusted_proxies=("127.0.0.1",)) as origin:
        async with origin.client("127.0.0.1") as http:  # nginx on this machine, trusted
            # A remote client may claim loopback; the proxy appends the address it really saw.
            spoofed = {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}
            assert refused(await http.post(BOOTSTRAP, headers=spoofed))
            local = {"X-Forwarded-For": "127.0.0.1"}
            assert (await http.post(BOOTSTRAP, headers=local)).status_code == 201


async def test_clients_of_a_remote_proxy_are_never_this_machine(tmp_path: Path) -> None:
    async with empty_origin(tmp_path, trusted_proxies=("10.0.0.1",)) as origin:
        async with origin.client("10.0.0.1") as http:  # a load balancer on another host
            assert refused(await http.post(BOOTSTRAP))
            # 127.0.0.1 as the balancer saw it is the balancer's own machine, not ours.
            local = {"X-Forwarded-For": "127.0.0.1"}
            assert refused(await http.post(BOOTSTRAP, headers=local))
            token = {"X-Bootstrap-Token": TOKEN, **local}
            assert (await http.post(BOOTSTRAP, headers=token)).status_code == 201


async def test_request_relayed_by_an_unlisted_local_proxy_is_not_local(
    origin: EmptyOrigin,
) -> None:
    # A proxy on this machine that is not in TRUSTED_PROXIES: the peer is loopback, but the
    # client is whoever it relayed.
    async with origin.client("127.0.0.1") as http:
        for header in (
            {"X-Forwarded-For": "203.0.113.9"},
            {"Forwarded": "for=203.0.113.9"},
            {"X-Real-IP": "203.0.113.9"},
        ):
            assert refused(await http.post(BOOTSTRAP, headers=header)), header


async def test_any_key_closes_bootstrap(origin: EmptyOrigin) -> None:
    async with origin.services.sessions() as session:
        await create_key(session, "project", "acme", "web")
        await session.commit()
    async with origin.client("127.0.0.1") as http:
        response = await http.post(BOOTSTRAP)
        assert refused(response)
        assert "banatie keys create --master" in response.json()["error"]["message"]
        assert refused(await http.post(BOOTSTRAP, headers={"X-Bootstrap-Token": TOKEN}))


# -- a real `banatie serve` -------------------------------------------------------------------


def _printed_token(server: Banatie) -> str | None:
    match = re.search(r"X-Bootstrap-Token: ([^']+)'", server.log.read_text())
    return match.group(1) if match else None


@pytest.fixture
def serve(tmp_path: Path) -> Any:
    started: list[Banatie] = []

    def start(**env: str) -> Banatie:
        server = Banatie("serve", tmp_path / f"data{len(started)}", env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_first_start_of_serve_closes_bootstrap(serve: Any) -> None:
    server = serve(BOOTSTRAP_DEFAULT_PROJECT="true")
    assert "created project default/default" in server.log.read_text()
    assert _printed_token(server) is None  # a key exists: nothing to open
    assert refused(httpx.post(server.url + BOOTSTRAP))


def test_serve_without_a_key_opens_bootstrap_to_the_printed_token(serve: Any) -> None:
    # A reverse proxy on loopback (trusted) names a remote client: the client is not local.
    server = serve(TRUSTED_PROXIES="127.0.0.1")
    token = _printed_token(server)
    assert token, server.log.read_text()
    url = server.url + BOOTSTRAP
    remote = {"X-Forwarded-For": "203.0.113.9"}
    assert refused(httpx.post(url, headers=remote))
    assert refused(httpx.post(url, headers={**remote, "X-Bootstrap-Token": token + "x"}))
    response = httpx.post(url, headers={**remote, "X-Bootstrap-Token": token})
    assert response.status_code == 201, response.text
    assert response.json()["data"]["type"] == "master"
    assert refused(httpx.post(url, headers={**remote, "X-Bootstrap-Token": token}))
    assert refused(httpx.post(url))


def test_each_start_prints_a_new_token(serve: Any, tmp_path: Path) -> None:
    first = serve()
    token = _printed_token(first)
    first.stop()
    again = Banatie("serve", first.data_dir).start()
    try:
        assert _printed_token(again) not in (None, token)
    finally:
        again.stop()


# -- concurrent first starts and first requests -----------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment that names an empty database of each kind."""
    if request.param == "sqlite":
        return {}  # DATA_DIR's own
    return {"DATABASE_URL": request.getfixturevalue("postgres_database")}


@pytest.fixture
def two_workers(tmp_path: Path, database: dict[str, str]) -> Any:
    """`banatie serve --workers 2` on an empty database, both workers through their start, so
    that requests race across processes as well as within one."""
    started: list[Banatie] = []

    def start(**env: str) -> Banatie:
        server = Banatie("serve", tmp_path / "data", {**database, **env}, ("--workers", "2"))
        started.append(server.start())
        wait_until(
            lambda: server.log.read_text().count("Application startup complete") == 2,
            "both workers to start",
        )
        return server

    yield start
    for server in started:
        server.stop()


async def test_concurrent_first_requests_mint_one_master_key(two_workers: Any) -> None:
    server = two_workers()
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        sent = (http.post(server.url + BOOTSTRAP) for _ in range(16))
        statuses = sorted(response.status_code for response in await asyncio.gather(*sent))
    assert statuses == [201] + [403] * 15


def test_workers_starting_together_create_one_default_project(two_workers: Any) -> None:
    server = two_workers(BOOTSTRAP_DEFAULT_PROJECT="true")
    assert server.log.read_text().count("created project default/default") == 1
