"""A generation's parameters once checked (by GenerationBody or LiveInput); nothing stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class GenerationInput:
    prompt: str
    aspect_ratio: str
    auto_enhance: bool
    template: str
    reference_inputs: list[str]
    flow: str | None  # given: that flow, or None for none; not given: a new flow
    flow_given: bool
    alias: str | None
    flow_alias: str | None
    meta: dict[str, Any]
