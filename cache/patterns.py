"""Patterns and limits both sides check: the edge on its routes, the origin in its models."""

from __future__ import annotations

import re

MAX_PROMPT_CHARS = 5000  # after trimming; the live key and every prompt field
# Regex sources, written without anchors: Python uses them with fullmatch, the OpenAPI
# document with ^...$ (which, unlike Python's $, does not let a trailing newline through).
UUID_RE = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
SLUG_RE = "[a-z0-9][a-z0-9_-]{0,63}"  # organization and project slugs
UUID_PATTERN = re.compile(UUID_RE)  # use with fullmatch
SLUG_PATTERN = re.compile(SLUG_RE)  # use with fullmatch
