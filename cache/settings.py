"""One typed settings object, read from the environment once at start and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from cache.budget import Rate

IP_BURST = 30  # new public live images one client gets at once: a page's worth


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _str(env: dict[str, str], name: str, default: str) -> str:
    raw = env.get(name)
    return default if raw is None or raw == "" else raw


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Each field documents its environment variable in README.md."""

    data_dir: Path = Path("./data")
    database_url: str = ""
    objects_dir: Path = Path("./data/objects")
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    redis_url: str = ""
    gemini_api_key: str = ""
    gemini_base_url: str = ""
    gemini_image_model: str = "gemini-2.5-flash-image"
    gemini_text_model: str = "gemini-2.5-flash"
    generator: str = ""  # "gemini" | "offline"; empty: gemini when a key is set
    generation_timeout_s: float = 120.0
    generation_retries: int = 2
    public_url: str = "http://localhost:3000"  # unset: follows HOST and PORT (local_url)
    host: str = "127.0.0.1"
    port: int = 3000
    origin_url: str = "http://127.0.0.1:3001"
    service_token: str = ""
    metrics_token: str = ""  # empty: /metrics is open (block it at the load balancer)
    bootstrap_default_project: bool = True
    bootstrap_token: str = ""  # empty: `banatie serve`/`origin` make one per start
    # Limits
    max_upload_bytes: int = 5 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_body_bytes: int = 1024 * 1024
    max_meta_bytes: int = 16 * 1024
    key_budget_per_hour: int = 100
    key_budget_burst: int = 0  # 0: KEY_BUDGET_PER_HOUR
    ip_budget_per_hour: int = 10
    ip_budget_burst: int = 0  # 0: 30, or IP_BUDGET_PER_HOUR if larger
    default_scope_limit: int = 30
    trusted_proxies: tuple[str, ...] = field(default_factory=tuple)
    header_timeout_s: float = 10.0  # for a request head to arrive; 0: no limit
    max_connections: int = 4096  # per process, capped by the open-file limit; 0: that limit
    # Edge
    l1_bytes: int = 256 * 1024 * 1024
    l1_max_entry_bytes: int = 8 * 1024 * 1024
    disk_cache_dir: Path = Path("./data/disk-cache")
    disk_cache_bytes: int | None = None  # None: on (10 GiB) unless the store is a local dir
    max_concurrent_generations: int = 16
    generation_queue: int = 16  # API generations waiting for a slot; more → 503
    lock_lease_ms: int = 10_000
    key_cache_ttl_s: float = 30.0
    failure_ttl_s: float = 5.0
    # Image variants (?w=&h=&fit=&format=&q=&dpr=)
    max_variant_dimension: int = 4096
    variant_quality: int = 80
    variant_workers: int = 0  # 0: one per core
    variant_queue: int = 32  # jobs waiting beyond the workers; more → 503
    max_variant_pixels: int = 60_000_000  # per job: the source as decoded plus the variant
    max_variants_per_image: int = 100  # distinct variants one source may get; more → 403
    log_level: str = "info"
    log_format: str = "text"  # text | json
    error_images: bool = True  # an <img> load's error is an SVG naming it, not JSON

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
        """Read every setting from `env` (default: os.environ); `overrides` win."""
        e = dict(os.environ if env is None else env)
        data_dir = Path(_str(e, "DATA_DIR", "./data"))
        port = _int(e, "PORT", cls.port)
        values: dict[str, object] = dict(
            data_dir=data_dir,
            database_url=_str(e, "DATABASE_URL", ""),
            objects_dir=Path(_str(e, "OBJECTS_DIR", str(data_dir / "objects"))),
            s3_endpoint=_str(e, "S3_ENDPOINT", ""),
            s3_bucket=_str(e, "S3_BUCKET", ""),
            s3_region=_str(e, "S3_REGION", "us-east-1"),
            s3_access_key_id=_str(e, "S3_ACCESS_KEY_ID", e.get("AWS_ACCESS_KEY_ID", "")),
            s3_secret_access_key=_str(
                e, "S3_SECRET_ACCESS_KEY", e.get("AWS_SECRET_ACCESS_KEY", "")
            ),
            redis_url=_str(e, "REDIS_URL", ""),
            gemini_api_key=_str(e, "GEMINI_API_KEY", ""),
            gemini_base_url=_str(e, "GEMINI_BASE_URL", ""),
            gemini_image_model=_str(e, "GEMINI_IMAGE_MODEL", cls.gemini_image_model),
            gemini_text_model=_str(e, "GEMINI_TEXT_MODEL", cls.gemini_text_model),
            generator=_str(e, "GENERATOR", ""),
            generation_timeout_s=_float(e, "GENERATION_TIMEOUT_S", cls.generation_timeout_s),
            generation_retries=_int(e, "GENERATION_RETRIES", cls.generation_retries),
            public_url=_str(e, "PUBLIC_URL", "").rstrip("/"),
            host=_str(e, "HOST", cls.host),
            port=port,
            origin_url=_str(e, "ORIGIN_URL", cls.origin_url).rstrip("/"),
            service_token=_str(e, "SERVICE_TOKEN", ""),
            metrics_token=_str(e, "METRICS_TOKEN", ""),
            bootstrap_default_project=_bool(e, "BOOTSTRAP_DEFAULT_PROJECT", True),
            bootstrap_token=_str(e, "BOOTSTRAP_TOKEN", ""),
            max_upload_bytes=_int(e, "MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_image_pixels=_int(e, "MAX_IMAGE_PIXELS", cls.max_image_pixels),
            max_body_bytes=_int(e, "MAX_BODY_BYTES", cls.max_body_bytes),
            max_meta_bytes=_int(e, "MAX_META_BYTES", cls.max_meta_bytes),
            key_budget_per_hour=_int(e, "KEY_BUDGET_PER_HOUR", cls.key_budget_per_hour),
            key_budget_burst=_int(e, "KEY_BUDGET_BURST", cls.key_budget_burst),
            ip_budget_per_hour=_int(e, "IP_BUDGET_PER_HOUR", cls.ip_budget_per_hour),
            ip_budget_burst=_int(e, "IP_BUDGET_BURST", cls.ip_budget_burst),
            default_scope_limit=_int(e, "DEFAULT_SCOPE_LIMIT", cls.default_scope_limit),
            trusted_proxies=tuple(
                p.strip() for p in _str(e, "TRUSTED_PROXIES", "").split(",") if p.strip()
            ),
            header_timeout_s=_float(e, "HEADER_TIMEOUT_S", cls.header_timeout_s),
            max_connections=_int(e, "MAX_CONNECTIONS", cls.max_connections),
            l1_bytes=_int(e, "L1_BYTES", cls.l1_bytes),
            l1_max_entry_bytes=_int(e, "L1_MAX_ENTRY_BYTES", cls.l1_max_entry_bytes),
            disk_cache_dir=Path(_str(e, "DISK_CACHE_DIR", str(data_dir / "disk-cache"))),
            disk_cache_bytes=(
                _int(e, "DISK_CACHE_BYTES", 0) if e.get("DISK_CACHE_BYTES") else None
            ),
            max_concurrent_generations=_int(
                e, "MAX_CONCURRENT_GENERATIONS", cls.max_concurrent_generations
            ),
            generation_queue=_int(e, "GENERATION_QUEUE", cls.generation_queue),
            lock_lease_ms=_int(e, "LOCK_LEASE_MS", cls.lock_lease_ms),
            key_cache_ttl_s=_float(e, "KEY_CACHE_TTL_S", cls.key_cache_ttl_s),
            failure_ttl_s=_float(e, "FAILURE_TTL_S", cls.failure_ttl_s),
            max_variant_dimension=_int(e, "MAX_VARIANT_DIMENSION", cls.max_variant_dimension),
            variant_quality=_int(e, "VARIANT_QUALITY", cls.variant_quality),
            variant_workers=_int(e, "VARIANT_WORKERS", cls.variant_workers),
            variant_queue=_int(e, "VARIANT_QUEUE", cls.variant_queue),
            max_variant_pixels=_int(e, "MAX_VARIANT_PIXELS", cls.max_variant_pixels),
            max_variants_per_image=_int(e, "MAX_VARIANTS_PER_IMAGE", cls.max_variants_per_image),
            log_level=_str(e, "LOG_LEVEL", cls.log_level),
            log_format=_str(e, "LOG_FORMAT", cls.log_format),
            error_images=_bool(e, "ERROR_IMAGES", cls.error_images),
        )
        known = {f.name for f in fields(cls)}
        for name, value in overrides.items():
            if name not in known:
                raise SettingsError(f"unknown setting {name}")
            values[name] = value
        if not values["public_url"]:  # after overrides: a port given to the CLI counts too
            host, port = values["host"], values["port"]
            assert isinstance(host, str) and isinstance(port, int)
            values["public_url"] = local_url(host, port)
        return cls(**values)  # type: ignore[arg-type]


def local_url(host: str, port: int) -> str:
    """The URL a browser on this machine reaches a server listening on host:port at."""
    if host in ("", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{port}"
