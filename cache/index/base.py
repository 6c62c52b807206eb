"""The live index interface and the record it holds."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LiveRecord:
    """What the edge needs to serve a live key without asking the origin."""

    image_id: str
    generation_id: str | None
    object_key: str
    content_type: str
    size: int
    etag: str  # quoted strong ETag, e.g. '"sha256hex"'
    canonical: str  # compared before use, so a digest collision never serves a wrong image
    focal_point: tuple[float, float] | None = None  # (x, y) in [0, 1]: where `cover` crops

    def __post_init__(self) -> None:
        if self.focal_point is not None and not isinstance(self.focal_point, tuple):
            x, y = self.focal_point  # JSON gives a list
            object.__setattr__(self, "focal_point", (float(x), float(y)))

    def to_json(self) -> bytes:
        data = asdict(self)
        if data["focal_point"] is None:
            del data["focal_point"]  # the shape older readers know
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> LiveRecord:
        """Fields this version does not know are ignored; missing optional ones default."""
        data = json.loads(raw)
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class Index(Protocol):
    async def get(self, digest: str) -> LiveRecord | None: ...

    async def set(self, digest: str, record: LiveRecord) -> None: ...

    async def delete(self, digest: str) -> None: ...

    async def close(self) -> None: ...
