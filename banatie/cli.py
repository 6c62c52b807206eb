"""The `banatie` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from cache.errors import ApiError
from cache.logs import configure_logging
from cache.settings import Settings, SettingsError


def _raise_open_file_limit() -> None:
    """Each client socket is a file: lift the soft RLIMIT_NOFILE (often 1024) to the hard
    limit, for this process and the workers it starts. MAX_CONNECTIONS stays below it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if target <= soft:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:  # e.g. macOS refuses more than kern.maxfilesperproc
        logging.getLogger("banatie").warning("open-file limit stays at %d: %s", soft, exc)


def _run(target: str, settings: Settings, workers: int) -> None:
    import uvicorn

    from edge.protocol import EdgeHttpTools

    _raise_open_file_limit()
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to whatever
    # handler was there before: make that a clean exit, so orchestrators see status 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        target,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        loop="uvloop",
        http=EdgeHttpTools,
        # X-Forwarded-For is read by the edge, from TRUSTED_PROXIES only; uvicorn's own
        # handling would trust any loopback peer's header before the edge saw the request.
        proxy_headers=False,
        log_level=settings.log_level,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.generation_timeout_s),
    )


async def _migrate(settings: Settings) -> None:
    from origin.db import make_engine, migrate

    engine = make_engine(settings.resolved_database_url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def _create_key(settings: Settings, args: argparse.Namespace) -> None:
    from origin.db import make_engine, migrate, sessions
    from origin.keys import check_slug, create_key

    engine = make_engine(settings.resolved_database_url)
    try:
        await migrate(engine)
        async with sessions(engine)() as session:
            if args.master:
                created = await create_key(session, "master", name=args.name)
            else:
                created = await create_key(
                    session,
                    "project",
                    check_slug(args.org, "--org"),
                    check_slug(args.project, "--project"),
                    args.name,
                    args.expires_in_days,
                )
            await session.commit()
    finally:
        await engine.dispose()
    print(created.secret)
    if not args.master:
        print(
            f"project key for {args.org}/{args.project} (shown once). Try:\n"
            f"  {settings.public_url}/cdn/{args.org}/{args.project}/live/demo?prompt=hello",
            file=sys.stderr,
        )


async def _gc(settings: Settings, args: argparse.Namespace) -> None:
    from cache.objects import open_store
    from origin.db import make_engine, sessions
    from origin.gc import sweep

    engine = make_engine(settings.resolved_database_url)
    store = open_store(settings)
    try:
        result = await sweep(
            store,
            sessions(engine),
            delete=args.delete,
            grace_s=args.grace,
            progress=lambda line: print(line, file=sys.stderr),
        )
    finally:
        await store.close()
        await engine.dispose()
    for key in result.orphans:
        print(key)
    if not args.delete and result.orphans:
        print("dry run: nothing removed (pass --delete to remove these)", file=sys.stderr)


async def _sign_url(settings: Settings, args: argparse.Namespace) -> None:
    from urllib.parse import urlsplit

    from origin.db import make_engine, migrate, sessions
    from origin.keys import check_slug
    from origin.projects import find_project
    from origin.signing import parse_live_url, sign_live_url

    org = check_slug(args.org, "--org")
    project_slug = check_slug(args.project, "--project")
    url = parse_live_url(args.url, org, project_slug, field="url")
    engine = make_engine(settings.resolved_database_url)
    try:
        await migrate(engine)
        async with sessions(engine)() as session:
            project = await find_project(session, org, project_slug)
            path, _ = sign_live_url(project, url, args.expires_in)
    finally:
        await engine.dispose()
    given = urlsplit(args.url)
    base = f"{given.scheme}://{given.netloc}" if given.scheme and given.netloc else None
    print((base or settings.public_url) + path)


def _days(text: str) -> int:
    """A key's lifetime on the command line: the bound POST /api/admin/keys applies."""
    days = int(text) if text.strip().isdigit() else 0
    if not 1 <= days <= 3650:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of days from 1 to 3650")
    return days


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # loadtests/ lives in a checkout, not in the installed package
        import subprocess
        from pathlib import Path

        root = Path(__file__).resolve().parent.parent
        return subprocess.call([sys.executable, "-m", "loadtests.bench", *argv[1:]], cwd=root)
    parser = argparse.ArgumentParser(prog="banatie", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "edge and origin in one process (embedded defaults)"),
        ("origin", "the origin (REST API) alone"),
        ("edge", "an edge alone, reaching the origin over HTTP (ORIGIN_URL, SERVICE_TOKEN)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--host")
        cmd.add_argument("--port", type=int)
        cmd.add_argument("--workers", type=int, default=1)
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("bench", help="benchmarks against nginx (python -m loadtests.bench --help)")
    gc = sub.add_parser("gc", help="list (or --delete) stored objects no row refers to")
    gc.add_argument("--delete", action="store_true", help="remove them (default: dry run)")
    gc.add_argument("--grace", type=float, default=30.0, help="seconds to re-check before removal")
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--org", default="default")
    create.add_argument("--project", default="default")
    create.add_argument("--name")
    create.add_argument("--expires-in-days", type=_days, help="1 to 3650 (default: never)")
    create.add_argument("--master", action="store_true", help="a master key instead")
    sign = sub.add_parser("sign-url", help="sign a live CDN URL with the project's secret")
    sign.add_argument("url", help="a live URL or path: /cdn/{org}/{project}/live/{scope}?prompt=")
    sign.add_argument("--org", default="default")
    sign.add_argument("--project", default="default")
    sign.add_argument("--expires-in", type=int, help="seconds the URL stays valid (default: ever)")
    args = parser.parse_args(argv)
    if args.command in ("serve", "origin", "edge"):
        # --host and --port are HOST and PORT: through the environment they reach the app,
        # built in the server's process (and each worker's), and PUBLIC_URL follows them.
        if args.host:
            os.environ["HOST"] = args.host
        if args.port is not None:
            os.environ["PORT"] = str(args.port)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:  # a bad environment, not a bad command line: no usage text
        print(f"banatie: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command in ("serve", "origin", "edge"):
        target = {
            "serve": "banatie.layouts:one_process_app",
            "origin": "banatie.layouts:origin_app",
            "edge": "banatie.layouts:edge_app",
        }[args.command]
        if args.command != "edge":  # the processes that open POST /api/bootstrap/initial-key
            from banatie.bootstrap import share_bootstrap_token

            share_bootstrap_token(settings)
        _run(target, settings, args.workers)
        return 0
    try:
        if args.command == "migrate":
            asyncio.run(_migrate(settings))
            print("database is up to date", file=sys.stderr)
        elif args.command == "gc":
            asyncio.run(_gc(settings, args))
        elif args.command == "keys":
            asyncio.run(_create_key(settings, args))
        elif args.command == "sign-url":
            asyncio.run(_sign_url(settings, args))
    except ApiError as exc:  # a bad argument: said in one line, as argparse does
        print(f"banatie {args.command}: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
