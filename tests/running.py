"""`banatie` processes started for real, for tests that need a live server or several."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


class Banatie:
    """One `banatie <command>` process on a free loopback port."""

    def __init__(
        self,
        command: str,
        data_dir: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.command = command
        self.args = args  # more command-line arguments, e.g. ("--workers", "2")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = data_dir / f"{command}-{self.port}.log"
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("S3_", "REDIS", "DATABASE"))
            },
            "DATA_DIR": str(data_dir),
            "PUBLIC_URL": self.url,
            "BOOTSTRAP_DEFAULT_PROJECT": "false",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> str:
        """Run a one-off `banatie` command with the same environment; its stdout."""
        return subprocess.run(
            [sys.executable, "-m", "banatie", *args],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout.decode()

    def start(self, timeout_s: float = 30) -> Banatie:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            command = [sys.executable, "-m", "banatie", self.command, "--port", str(self.port)]
            self.process = subprocess.Popen(
                [*command, *self.args],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"banatie {self.command} exited:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code in (200, 404):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"banatie {self.command} did not start:\n{self.log.read_text()[-3000:]}")

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.process.wait(timeout=10)
