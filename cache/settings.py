"""One typed settings object, read from the environment once at start and passed down.

Each setting is declared once, as a field of `Settings` whose metadata names its environment
variable, the parser that checks its value and the README text: `from_env` loops over the
fields, and `readme_table()` renders README.md's configuration table (a test keeps them equal).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cache.budget import Rate

IP_BURST = 30  # new public live images one client gets at once: a page's worth

# What the servers accept: cache/index/redis.py `connect` (redis-py's schemes, each with a
# `+cluster` form) and origin/db.py `make_engine` (async drivers; plain postgres is rewritten).
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
DATABASE_SCHEMES = ("sqlite+aiosqlite", "postgresql", "postgres", "postgresql+asyncpg")
HTTP_SCHEMES = ("http", "https")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})

Parse = Callable[[str, str], Any]  # (variable, its non-empty value) -> the setting's value


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _int(maximum: int | None = None) -> Parse:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if value < 0 or (maximum is not None and value > maximum):
            bound = f"0 to {maximum}" if maximum is not None else "0 or more"
            raise SettingsError(f"{name} must be {bound}, got {raw!r}")
        return value

    return parse


def _float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{name} must be a number, 0 or more, got {raw!r}")
    return value


def _bool(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE or word in FALSE:
        return word in TRUE
    raise SettingsError(f"{name} must be true or false (or 1/0, yes/no, on/off), got {raw!r}")


def _str(name: str, raw: str) -> str:
    return raw


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _choice(*accepted: str) -> Parse:
    def parse(name: str, raw: str) -> str:
        if raw.lower() not in accepted:  # case aside: LOG_LEVEL=INFO is plainly meant
            raise SettingsError(f"{name} must be one of {', '.join(accepted)}, got {raw!r}")
        return raw.lower()

    return parse


def _url(*schemes: str, base: bool = False) -> Parse:
    """A URL with one of `schemes`; a `base` URL loses its trailing slash (paths follow it)."""

    def parse(name: str, raw: str) -> str:
        scheme, sep, rest = raw.partition("://")
        if not sep or scheme.lower() not in schemes or not rest.strip("/"):
            accepted = ", ".join(f"{s}://" for s in schemes)
            raise SettingsError(f"{name} must be a URL starting {accepted}; got {raw!r}")
        return raw.rstrip("/") if base else raw

    return parse


def _comma_list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


PARSERS: dict[type, Parse] = {bool: _bool, int: _int(), float: _float, str: _str, Path: _path}


def setting(
    default: Any,
    env: str,
    doc: str,
    *,
    parse: Parse | None = None,
    shown: str = "",
    fallback: str = "",
    under_data_dir: str = "",
) -> Any:
    """A Settings field read from `env`. `doc` and `shown` (the default as README shows it;
    derived from `default` when empty) are its README row; `parse` checks a non-empty value
    (by the default's type when None); `fallback` is a variable read when `env` is empty;
    `under_data_dir` makes the default that name under DATA_DIR."""
    metadata = {
        "env": env,
        "doc": doc,
        "parse": parse or PARSERS[Path if isinstance(default, Path) else type(default)],
        "shown": shown or _shown(default),
        "fallback": fallback,
        "under_data_dir": under_data_dir,
    }
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


def _shown(default: Any) -> str:
    if default in ("", (), None):
        return "empty"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    if isinstance(default, Path) and not default.is_absolute():
        return f"`./{default}`"
    return f"`{default}`"


@dataclass(frozen=True)
class Settings:
    """Everything configurable: one field per environment variable, documented in README.md."""

    data_dir: Path = setting(  # noqa: RUF009 (a field(), as with str fields)
        Path("./data"),
        "DATA_DIR",
        "Where the default SQLite database (`banatie.db`) and the local object directory live.",
    )
    database_url: str = setting(
        "",
        "DATABASE_URL",
        "SQLAlchemy async URL. PostgreSQL: `postgresql+asyncpg://user:pass@host:5432/db` "
        "(`postgresql://` and `postgres://` are rewritten to asyncpg). Migrations run at start.",
        parse=_url(*DATABASE_SCHEMES),
        shown="SQLite at `$DATA_DIR/banatie.db`",
    )
    objects_dir: Path = setting(  # noqa: RUF009 (a field(), as with str fields)
        Path("./data/objects"),
        "OBJECTS_DIR",
        "Local object store (image bytes and live manifests), used when `S3_BUCKET` is empty.",
        under_data_dir="objects",
        shown="`$DATA_DIR/objects`",
    )
    s3_endpoint: str = setting(
        "",
        "S3_ENDPOINT",
        "Endpoint URL for any other S3-compatible store (MinIO, R2, ...); path-style addressing"
        " is used when set.",
        shown="empty (AWS S3)",
    )
    s3_bucket: str = setting(
        "",
        "S3_BUCKET",
        "Setting it switches object storage to S3. The bucket must already exist.",
    )
    s3_region: str = setting(
        "us-east-1",
        "S3_REGION",
        "S3 region.",
    )
    s3_access_key_id: str = setting(
        "",
        "S3_ACCESS_KEY_ID",
        "S3 access key. If both are empty, boto3's usual credential chain applies.",
        fallback="AWS_ACCESS_KEY_ID",
        shown="`$AWS_ACCESS_KEY_ID`",
    )
    s3_secret_access_key: str = setting(
        "",
        "S3_SECRET_ACCESS_KEY",
        "S3 secret key.",
        fallback="AWS_SECRET_ACCESS_KEY",
        shown="`$AWS_SECRET_ACCESS_KEY`",
    )
    redis_url: str = setting(
        "",
        "REDIS_URL",
        "Redis for the shared index, cross-process lock, budgets and invalidation. Empty: all "
        "in-process (one process only). See below for Redis Cluster.",
        parse=_url(*REDIS_SCHEMES),
    )
    gemini_api_key: str = setting(
        "",
        "GEMINI_API_KEY",
        "Google Gemini key. Set: real images from Gemini; empty: the offline generator.",
    )
    gemini_base_url: str = setting(
        "",
        "GEMINI_BASE_URL",
        "Override the Gemini API base URL (a proxy, a test server).",
    )
    gemini_image_model: str = setting(
        "gemini-2.5-flash-image",
        "GEMINI_IMAGE_MODEL",
        "Model that draws the images. Part of the live cache key.",
    )
    gemini_text_model: str = setting(
        "gemini-2.5-flash",
        "GEMINI_TEXT_MODEL",
        "Model that rewrites prompts when `autoEnhance` is on.",
    )
    generator: str = setting(
        "",
        "GENERATOR",
        "Force a generator: `gemini` or `offline`.",
        parse=_choice("gemini", "offline"),
        shown="`gemini` if `GEMINI_API_KEY` is set, else `offline`",
    )
    generation_timeout_s: float = setting(
        120.0,
        "GENERATION_TIMEOUT_S",
        "Time limit for one model call; live waiters give up with 504 after twice this. Also "
        "the graceful-shutdown time, and a generation untouched for 3x this is marked failed "
        "(its process died).",
    )
    generation_retries: int = setting(
        2,
        "GENERATION_RETRIES",
        "Retries of a Gemini call on rate limits and outages, within the timeout.",
    )
    public_url: str = setting(
        "http://localhost:3000",
        "PUBLIC_URL",
        "The URL browsers reach the edge at: used in the start-up log, `storageUrl`, signed "
        "URLs, the printed live URL and the OpenAPI `servers`. Unset, it follows "
        "`--port`/`PORT` and `--host`/`HOST`.",
        parse=_url(*HTTP_SCHEMES, base=True),
        shown="`http://localhost:$PORT` (the `--host`/`HOST` instead of `localhost` when that is "
        "not a loopback or any-address)",
    )
    host: str = setting(
        "127.0.0.1",
        "HOST",
        "Address to listen on (`--host` overrides).",
    )
    port: int = setting(
        3000,
        "PORT",
        "Port to listen on (`--port` overrides); an unset `PUBLIC_URL` follows it.",
        parse=_int(maximum=65535),
    )
    origin_url: str = setting(
        "http://127.0.0.1:3001",
        "ORIGIN_URL",
        "Where `banatie edge` reaches the origin.",
        parse=_url(*HTTP_SCHEMES, base=True),
    )
    service_token: str = setting(
        "",
        "SERVICE_TOKEN",
        "Shared secret between edges and the origin (`Authorization: Bearer`). Empty on the "
        "origin: no edge can reach it.",
    )
    metrics_token: str = setting(
        "",
        "METRICS_TOKEN",
        "When set, `GET /metrics` needs `Authorization: Bearer <token>` (401 otherwise). Empty:"
        " `/metrics` is open; block it at your load balancer.",
    )
    bootstrap_default_project: bool = setting(
        True,
        "BOOTSTRAP_DEFAULT_PROJECT",
        "`banatie serve` on an empty database creates `default/default` and prints a key.",
    )
    bootstrap_token: str = setting(
        "",
        "BOOTSTRAP_TOKEN",
        "The `X-Bootstrap-Token` that opens `POST /api/bootstrap/initial-key` to a non-loopback"
        " client while no key exists; printed at start in that case.",
        shown="empty (a random one per start)",
    )
    max_upload_bytes: int = setting(
        5 * 1024 * 1024,
        "MAX_UPLOAD_BYTES",
        "Largest upload; larger → 413. Counted as the body streams in (chunked too, 64 KB "
        "allowed for the multipart framing): the 413 comes once the limit is passed, and the "
        "connection is closed without reading the rest.",
        shown="`5242880` (5 MB)",
    )
    max_image_pixels: int = setting(
        40_000_000,
        "MAX_IMAGE_PIXELS",
        "Largest image (width × height) accepted.",  # noqa: RUF001 (README text)
    )
    max_body_bytes: int = setting(
        1024 * 1024,
        "MAX_BODY_BYTES",
        "Largest JSON request body (counted as it streams in, as uploads are). JSON nested "
        "deeper than 32 levels, or holding a NUL (`\\u0000`), is a 400, as is a NUL in any URL.",
        shown="`1048576` (1 MB)",
    )
    max_meta_bytes: int = setting(
        16 * 1024,
        "MAX_META_BYTES",
        "Largest `meta` object.",
        shown="`16384` (16 KB)",
    )
    key_budget_per_hour: int = setting(
        100,
        "KEY_BUDGET_PER_HOUR",
        "Refill rate of each key's generation bucket, per hour (`POST generations`, retry, "
        "regenerate, live misses; hits never count). Budgets are token buckets (GCRA), one Lua "
        "script per take in Redis, so every process shares them; `0`: none allowed.",
    )
    key_budget_burst: int = setting(
        0,
        "KEY_BUDGET_BURST",
        "Generations a key may start at once, before the refill rate rules.",
        shown="`KEY_BUDGET_PER_HOUR`",
    )
    ip_budget_per_hour: int = setting(
        10,
        "IP_BUDGET_PER_HOUR",
        "Refill rate, per hour, of each client IP's bucket of new live images per project on "
        "public CDN live URLs; `0`: none allowed.",
    )
    ip_budget_burst: int = setting(
        0,
        "IP_BUDGET_BURST",
        "New CDN live images one client IP may cause at once per project: a page of up to 30 "
        "new images loads whole.",
        shown="`30` (or `IP_BUDGET_PER_HOUR` if larger)",
    )
    default_scope_limit: int = setting(
        30,
        "DEFAULT_SCOPE_LIMIT",
        "`newGenerationsLimit` of a live scope created on first use (or without one).",
    )
    trusted_proxies: tuple[str, ...] = setting(
        (),
        "TRUSTED_PROXIES",
        "Comma-separated addresses or CIDRs of your proxies/load balancers; behind them the "
        "client IP is read from `X-Forwarded-For`: the nearest hop not in the list, as `ip`, "
        "`ip:port` or `[v6]:port` (the port is dropped); a hop that is not an address "
        "(`unknown`) is that client's name for its budget.",
        parse=_comma_list,
    )
    header_timeout_s: float = setting(
        10.0,
        "HEADER_TIMEOUT_S",
        "Time a connection gets to send a complete request head, from its opening or the end of"
        " the previous response; slower or silent connections are closed. `0`: no limit.",
    )
    max_connections: int = setting(
        4096,
        "MAX_CONNECTIONS",
        "Open connections per process. A new connection past it closes the ones that have "
        "waited longest for a request head (busy ones are never closed). Never more than the "
        "open-file limit less 256 (`banatie serve/origin/edge` raise the soft `RLIMIT_NOFILE` "
        "to the hard limit at start); `0`: that limit alone.",
    )
    l1_bytes: int = setting(
        256 * 1024 * 1024,
        "L1_BYTES",
        "Size of each process's in-memory response cache.",
        shown="`268435456` (256 MB)",
    )
    l1_max_entry_bytes: int = setting(
        8 * 1024 * 1024,
        "L1_MAX_ENTRY_BYTES",
        "Larger images are streamed from storage instead of kept in L1.",
        shown="`8388608` (8 MB)",
    )
    disk_cache_dir: Path = setting(  # noqa: RUF009 (a field(), as with str fields)
        Path("./data/disk-cache"),
        "DISK_CACHE_DIR",
        "Directory of the disk tier: ready responses on local disk between L1 and object "
        'storage, shared by every worker of the host and kept across restarts (see "The disk '
        'tier"). Use a local disk; processes sharing it should share `DISK_CACHE_BYTES`.',
        under_data_dir="disk-cache",
        shown="`$DATA_DIR/disk-cache`",
    )
    disk_cache_bytes: int = setting(
        10 * 1024**3,
        "DISK_CACHE_BYTES",
        "Bound of the disk tier for the whole host (all workers), in bytes of its entry "
        "files; SIEVE evicts past it. One entry takes at most an eighth of it, and at most "
        "`L1_MAX_ENTRY_BYTES`. `0`: off. On for `banatie serve` on a local `OBJECTS_DIR` too: "
        "a second copy of what was served, for 40 % less CPU per long-tail request.",
        shown="`10737418240` (10 GiB)",
    )
    max_concurrent_generations: int = setting(
        16,
        "MAX_CONCURRENT_GENERATIONS",
        "Generations running at once per process; over it → 503 with `Retry-After`.",
    )
    generation_queue: int = setting(
        16,
        "GENERATION_QUEUE",
        "API generations (`POST /api/v1/generations`, retry, regenerate) that wait for a free "
        "slot beyond `MAX_CONCURRENT_GENERATIONS`; with the queue full → 503 with "
        "`Retry-After`, and nothing is stored or spent. Live misses never queue.",
    )
    lock_lease_ms: int = setting(
        10_000,
        "LOCK_LEASE_MS",
        "Lease of the cross-process generation lock in Redis (renewed while the leader works).",
    )
    key_cache_ttl_s: float = setting(
        30.0,
        "KEY_CACHE_TTL_S",
        "How long an edge trusts its cached view of a key or project.",
    )
    failure_ttl_s: float = setting(
        5.0,
        "FAILURE_TTL_S",
        "How long a failed live generation is remembered before the next request tries again.",
    )
    max_variant_dimension: int = setting(
        4096,
        "MAX_VARIANT_DIMENSION",
        "Largest side of an image variant in pixels, asked for (`w`, `h`) or following from the"
        " source's aspect ratio; larger → 400.",
    )
    variant_quality: int = setting(
        80,
        "VARIANT_QUALITY",
        "Default `q` of image variants.",
    )
    variant_workers: int = setting(
        0,
        "VARIANT_WORKERS",
        "Variant encoding threads per process.",
        shown="`0` (one per core)",
    )
    variant_queue: int = setting(
        32,
        "VARIANT_QUEUE",
        "Variant jobs that may wait beyond the workers; more → 503.",
    )
    max_variant_pixels: int = setting(
        60_000_000,
        "MAX_VARIANT_PIXELS",
        "Pixels one variant job may hold: the source as decoded (JPEGs decode at 1/2–1/8 scale "  # noqa: RUF001
        "when the variant is that much smaller) plus the variant; more → 400. A job peaks near "
        "6 bytes per pixel (≈ 360 MB at the default), and each process runs `VARIANT_WORKERS` "
        "jobs at once.",
    )
    max_variants_per_image: int = setting(
        100,
        "MAX_VARIANTS_PER_IMAGE",
        "Distinct variants one image may get; a new one beyond it → 403 `VARIANT_LIMIT_REACHED`"
        " (those made are still served). Counted in Redis when `REDIS_URL` is set, else per "
        "process.",
    )
    log_level: str = setting(
        "info",
        "LOG_LEVEL",
        "`debug`, `info`, `warning`, `error`, `critical`.",
        parse=_choice(*LOG_LEVELS),
    )
    log_format: str = setting(
        "text",
        "LOG_FORMAT",
        "`text`, or `json` for one JSON object per line. Either way each line carries the "
        "request id.",
        parse=_choice("text", "json"),
    )
    error_images: bool = setting(
        True,
        "ERROR_IMAGES",
        "An error of a live or CDN URL requested as an image (`Sec-Fetch-Dest: image`, or an "
        "`Accept` preferring images to JSON) is an SVG image naming it, with the same status. "
        "`false`: always the JSON envelope (browsers block it in `<img>`, and `onerror` fires).",
    )

    @property
    def generator_name(self) -> str:
        if self.generator:
            return self.generator
        return "gemini" if self.gemini_api_key else "offline"

    @property
    def key_rate(self) -> Rate:
        """A key's generation bucket: by default it may spend its hourly budget at once."""
        return Rate(self.key_budget_per_hour, self.key_budget_burst or self.key_budget_per_hour)

    @property
    def ip_rate(self) -> Rate:
        """A client IP's bucket of new public live images, per project: by default a page of
        30 new images loads at once, then IP_BUDGET_PER_HOUR more an hour."""
        burst = self.ip_budget_burst or max(IP_BURST, self.ip_budget_per_hour)
        return Rate(self.ip_budget_per_hour, burst)

    @property
    def storage_backend(self) -> str:
        return "s3" if self.s3_bucket else "local"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'banatie.db').resolve()}"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Read every setting from `env` (default: os.environ); `overrides` win. A value the
        setting's parser refuses raises SettingsError naming the variable."""
        e = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):  # DATA_DIR comes first: the defaults of others lie under it
            meta = f.metadata
            raw = e.get(meta["env"]) or (e.get(meta["fallback"], "") if meta["fallback"] else "")
            if raw:
                values[f.name] = meta["parse"](meta["env"], raw)
            elif meta["under_data_dir"]:
                values[f.name] = (
                    Path(str(values.get("data_dir", cls.data_dir))) / meta["under_data_dir"]
                )
        known = {f.name for f in fields(cls)}
        for name, value in overrides.items():
            if name not in known:
                raise SettingsError(f"unknown setting {name}")
            values[name] = value
        if not values.get("public_url"):  # after overrides: a port given to the CLI counts too
            host = values.get("host", cls.host)
            port = values.get("port", cls.port)
            assert isinstance(host, str) and isinstance(port, int)
            values["public_url"] = local_url(host, port)
        return cls(**values)


# A plain field would have no variable, parser or README row: say so at import, by name.
_undeclared = [f.name for f in fields(Settings) if "env" not in f.metadata]
if _undeclared:
    raise TypeError(f"Settings fields not declared with setting(): {', '.join(_undeclared)}")


def readme_table() -> str:
    """README.md's configuration table, rendered from the declarations."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for f in fields(Settings):
        m = f.metadata
        lines.append(f"| `{m['env']}` | {m['shown']} | {m['doc']} |")
    return "\n".join(lines)


def local_url(host: str, port: int) -> str:
    """The URL a browser on this machine reaches a server listening on host:port at."""
    if host in ("", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{port}"


if __name__ == "__main__":  # `python -m cache.settings`: the table to paste into README.md
    print(readme_table())
