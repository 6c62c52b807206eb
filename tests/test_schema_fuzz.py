"""schemathesis against /openapi.json on a running server: no 5xx, and every response,
`data` included, matches the schema generated from the models (origin/schemas/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.running import Banatie

EXAMPLES_PER_ROUTE = 40  # 45 operations → over 3,000 requests; README shows a longer run
CONFIG = Path(__file__).with_name("schemathesis.toml")  # README's longer run uses it too


def test_api_never_fails_and_matches_its_schema(tmp_path: Path) -> None:
    app = Banatie("serve", tmp_path)
    key = app.cli("keys", "create", "--org", "fuzz", "--project", "api").strip()
    app.start()
    try:
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(CONFIG),
                "run",
                f"{app.url}/openapi.json",
                "--header",
                f"X-API-Key: {key}",
                "--max-examples",
                str(EXAMPLES_PER_ROUTE),
                "--request-timeout",
                "30",
                "--seed",
                "1",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        app.stop()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
