"""The first start: a default project to try, the token that opens the first master key."""

from __future__ import annotations

import os
import secrets
import sys

from cache.settings import Settings
from origin.keys import any_key_exists, create_key, lock_keys
from origin.projects import any_project_exists
from origin.services import Services


def share_bootstrap_token(settings: Settings) -> None:
    """One token per start unless BOOTSTRAP_TOKEN is set, shared through the environment with
    every worker process; the server prints it while no key exists."""
    if not settings.bootstrap_token:
        os.environ["BOOTSTRAP_TOKEN"] = secrets.token_urlsafe(24)


async def bootstrap_default_project(services: Services) -> None:
    """First start on an empty database: a default project and a key to try it with."""
    if not services.settings.bootstrap_default_project:
        return
    async with services.sessions() as session:
        if await any_project_exists(session):
            return
        await lock_keys(session)  # workers starting together: the first one creates it
        if await any_project_exists(session):
            return
        created = await create_key(session, "project", "default", "default", "first key")
        await session.commit()
    url = services.settings.public_url
    print(
        "\n  banatie: created project default/default. Your project key (shown once):\n"
        f"    {created.secret}\n"
        "  Paste this into a browser for a live image:\n"
        f"    {url}/cdn/default/default/live/demo?prompt=a%20lighthouse%20at%20dawn"
        "&aspectRatio=16:9\n",
        file=sys.stderr,
        flush=True,
    )


async def announce_bootstrap(services: Services) -> None:
    """No key at all yet: say how to make the first master key (the route closes after)."""
    async with services.sessions() as session:
        if await any_key_exists(session):
            return
    url = services.settings.public_url
    token = services.settings.bootstrap_token
    header = f" -H 'X-Bootstrap-Token: {token}'" if token else ""
    print(
        "\n  banatie: no API key exists yet. Create the first master key (once) with\n"
        f"    curl -X POST {url}/api/bootstrap/initial-key{header}\n"
        "  or run `banatie keys create --master` on this machine.\n",
        file=sys.stderr,
        flush=True,
    )
