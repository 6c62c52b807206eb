"""X-Forwarded-For behind TRUSTED_PROXIES (cache.client_ip), on a real `banatie serve`: every
client the proxy names has its own per-IP budget, whatever form its hop takes."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count

import httpx
import pytest

from tests.running import Banatie
from tests.test_multiprocess import project_key

prompts = count()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banatie]:
    env = {"TRUSTED_PROXIES": "127.0.0.1", "IP_BUDGET_PER_HOUR": "1", "IP_BUDGET_BURST": "1"}
    app = Banatie("serve", tmp_path_factory.mktemp("xff"), env=env).start()
    try:
        project_key(app)
        yield app
    finally:
        app.stop()


def miss(app: Banatie, forwarded_for: str | None) -> int:
    """The status of a live URL never asked for before (it costs budget), as `forwarded_for`."""
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    url = f"{app.url}/cdn/acme/web/live/site?prompt=picture%20{next(prompts)}"
    return httpx.get(url, headers=headers, timeout=30).status_code


@pytest.fixture(scope="module")
def proxy_budget_spent(proxied: Banatie) -> Banatie:
    """The proxy's own address (no header) has used its one new image."""
    assert miss(proxied, None) == 200
    assert miss(proxied, None) == 429
    return proxied


@pytest.mark.parametrize(
    ("hop", "same_client"),
    [
        ("203.0.113.5:4711", "203.0.113.5:9999"),
        ("[2001:db8::1]:443", "2001:DB8::1"),
        ("garbage", "10.0.0.1, garbage"),
    ],
)
def test_each_forwarded_client_has_its_own_ip_budget(
    proxy_budget_spent: Banatie, hop: str, same_client: str
) -> None:
    app = proxy_budget_spent
    assert miss(app, hop) == 200  # not the proxy's spent budget
    assert miss(app, hop) == 429  # its own, now spent
    assert miss(app, same_client) == 429  # another port, spelling or history: the same client
