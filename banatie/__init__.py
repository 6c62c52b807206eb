"""The composition root: the `banatie` command, the process layouts and the first start.

The one package that imports `edge/`, `origin/` and `cache/` alike; nothing imports it."""
