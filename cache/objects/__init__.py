"""Object storage: a small interface, one file per backend, chosen by configuration."""

from __future__ import annotations

from cache.objects.base import (
    CHUNK,
    InvalidObjectKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageUnavailable,
    validate_key,
)
from cache.settings import Settings

# The interface lives in base.py so the backends, imported lazily below, need not
# import this package back.
__all__ = [
    "CHUNK",
    "InvalidObjectKey",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StorageUnavailable",
    "open_store",
    "validate_key",
]


def open_store(settings: Settings) -> ObjectStore:
    """The backend the settings name: S3 when a bucket is set, else the local directory."""
    if settings.storage_backend == "s3":
        from cache.objects.s3 import S3Store

        return S3Store(
            bucket=settings.s3_bucket,
            endpoint=settings.s3_endpoint or None,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=settings.s3_secret_access_key or None,
        )
    from cache.objects.local import LocalStore

    return LocalStore(settings.objects_dir)
