"""Image generators: the role's interface here, one file per backend, chosen by configuration."""

from __future__ import annotations

from cache.settings import Settings
from origin.generators.base import (
    ASPECT_RATIOS,
    TEMPLATES,
    GeneratedImage,
    Generator,
    GeneratorError,
    GeneratorUnavailable,
    ImageRequest,
    ReferenceImage,
)

# The interface lives in base.py so the backends, imported lazily below, need not
# import this package back.
__all__ = [
    "ASPECT_RATIOS",
    "TEMPLATES",
    "GeneratedImage",
    "Generator",
    "GeneratorError",
    "GeneratorUnavailable",
    "ImageRequest",
    "ReferenceImage",
    "open_generator",
]


def open_generator(settings: Settings) -> Generator:
    """The generator the settings name (`GENERATOR`, else gemini when a key is set)."""
    name = settings.generator_name
    if name == "gemini":
        from origin.generators.gemini import GeminiGenerator

        return GeminiGenerator(settings)
    if name == "offline":
        from origin.generators.offline import OfflineGenerator

        return OfflineGenerator()
    raise ValueError(f"unknown generator {name!r} (GENERATOR must be gemini or offline)")
