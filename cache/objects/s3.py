"""Objects in an S3-compatible bucket (AWS S3, MinIO, R2, moto).

boto3 is blocking, so every call runs on this store's own thread pool, sized like the client's
connection pool; the event loop never waits on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cache.objects.base import (
    CHUNK,
    ObjectInfo,
    ObjectNotFound,
    StorageUnavailable,
    validate_key,
)

POOL_SIZE = 32
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}

T = TypeVar("T")


class S3Store:
    """ObjectStore over one S3 bucket."""

    def __init__(
        self,
        bucket: str,
        endpoint: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        self.region = region
        self._where = endpoint or f"AWS S3 ({region})"
        config = Config(
            max_pool_connections=POOL_SIZE,
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=2,
            read_timeout=10,
            # Other S3 implementations (MinIO, R2, ...) reject boto3's default checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Custom endpoints rarely resolve bucket subdomains.
            s3={"addressing_style": "path"} if endpoint else None,
        )
        # A session of our own: boto3's default session is not thread-safe.
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )
        self._executor = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="s3")

    async def put(self, key: str, data: bytes, content_type: str, *, durable: bool = True) -> None:
        validate_key(key)
        with self._errors(key):
            await self._run(
                self._client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
            )

    async def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [start, end] (inclusive end, None = to the end) in chunks."""
        validate_key(key)
        if start < 0:
            raise ValueError(f"range start must be >= 0, got {start}")
        if end is not None and end < start:
            return  # S3 would ignore such a range and send the whole object
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end}"
        with self._errors(key):
            try:
                response = await self._run(self._client.get_object, **request)
            except ClientError as e:
                if _code(e) == "InvalidRange":  # start at or past the end: nothing to send
                    return
                raise
        body = response["Body"]
        try:
            while True:
                with self._errors(key):
                    chunk = await self._run(body.read, CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def read(self, key: str) -> bytes:
        validate_key(key)

        def read_all() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            with contextlib.closing(response["Body"]) as body:
                data: bytes = body.read()  # boto3 is untyped: the body's read() gives bytes
                return data

        with self._errors(key):
            return await self._run(read_all)

    async def head(self, key: str) -> ObjectInfo:
        validate_key(key)
        with self._errors(key):
            response = await self._run(self._client.head_object, Bucket=self.bucket, Key=key)
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            content_type=response.get("ContentType") or DEFAULT_CONTENT_TYPE,
        )

    async def exists(self, key: str) -> bool:
        try:
            await self.head(key)
        except ObjectNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        validate_key(key)
        with self._errors(key):
            await self._run(self._client.delete_object, Bucket=self.bucket, Key=key)

    async def keys(self, prefix: str = "") -> AsyncIterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages: Iterator[dict[str, Any]] = iter(
            paginator.paginate(Bucket=self.bucket, Prefix=prefix)
        )
        while True:
            with self._errors():
                page = await self._run(next, pages, None)
            if page is None:
                return
            for item in page.get("Contents", []):
                yield item["Key"]

    async def check(self) -> None:
        with self._errors():
            await self._run(self._client.head_bucket, Bucket=self.bucket)

    async def create_bucket(self) -> None:
        """Create the bucket if it does not exist yet (tests, first start against MinIO)."""
        request: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        with self._errors():
            try:
                await self._run(self._client.create_bucket, **request)
            except ClientError as e:
                if _code(e) != "BucketAlreadyOwnedByYou":
                    raise

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # ---------------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Map boto errors to ours; `key` None means a bucket-level call."""
        try:
            yield
        except ClientError as e:
            code = _code(e)
            if code in _NOT_FOUND and key is not None:
                raise ObjectNotFound(key) from None
            if code in _NO_BUCKET or code in _NOT_FOUND:
                raise StorageUnavailable(
                    f"S3 bucket {self.bucket!r} does not exist at {self._where} (S3_BUCKET)"
                ) from e
            if code in _DENIED:
                raise StorageUnavailable(
                    f"access to S3 bucket {self.bucket!r} at {self._where} denied ({code}); "
                    "check S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY"
                ) from e
            raise StorageUnavailable(
                f"S3 bucket {self.bucket!r} at {self._where} failed: {code} {e}"
            ) from e
        except BotoCoreError as e:
            raise StorageUnavailable(
                f"cannot use S3 bucket {self.bucket!r} at {self._where}: {e}"
            ) from e


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
