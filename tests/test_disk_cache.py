"""edge/disk_cache.py on its own: what a crash leaves behind, and the index rebuilt from the
directory. (Through HTTP, with real edges: tests/test_disk_tier.py.)"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge.disk_cache import DiskCache
from edge.lru import Entry
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


def entry(n: int, size: int) -> Entry:
    body = hashlib.shake_256(f"body {n}".encode()).digest(size)
    etag = f'"{hashlib.sha256(body).hexdigest()}"'.encode()
    headers = [(b"content-type", b"image/png"), (b"content-length", str(size).encode())]
    return Entry(200, [*headers, (b"etag", etag)], [(b"etag", etag)], body, etag.decode(), f"i{n}")


# The child keeps writing 8 MB entries until it is killed.
WRITER = """
import sys
from pathlib import Path
from edge.disk_cache import DiskCache
from tests.test_disk_cache import entry
cache = DiskCache(Path(sys.argv[1]), 1 << 30, max_entry_bytes=1 << 24)
n = 0
while True:
    cache.put(f"key {n}", entry(n, 8 << 20))
    cache.flush()
    n += 1
"""


def test_sigkill_in_the_middle_of_a_write_leaves_nothing_servable_wrongly(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "disk"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], cwd=ROOT)
    try:

        def mid_write() -> bool:  # after a few whole entries, a temp file half written
            assert child.poll() is None, "the writer died"
            return len(list((folder / "entries").glob("*/*"))) >= 2 and _half_written(folder)

        # Polled often: a write of 8 MB is half done only for a moment.
        wait_until(mid_write, "the writer to be mid-write", 60, poll_s=0.001)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert list((folder / "tmp").iterdir()), "killed between writes, not in one: try again"
    cache = DiskCache(folder, 1 << 30, max_entry_bytes=1 << 24)
    try:
        served = 0
        for n in range(200):
            found = cache.peek(f"key {n}")
            if found is not None:
                assert found.body == entry(n, 8 << 20).body
                served += 1
        assert served >= 2
        assert cache.repairs == 0  # temp + rename: no whole-looking entry was ever torn
    finally:
        cache.close_now()


def _half_written(folder: Path) -> bool:
    for item in (folder / "tmp").glob("*"):
        try:
            if 0 < item.stat().st_size < 8 << 20:
                return True
        except FileNotFoundError:
            pass
    return False


def test_a_lost_index_is_rebuilt_from_the_directory(tmp_path: Path) -> None:
    folder = tmp_path / "disk"
    cache = DiskCache(folder, 1 << 20, max_entry_bytes=1 << 16)
    for n in range(5):
        cache.put(f"key {n}", entry(n, 10_000))
    cache.flush()
    held = cache.bytes
    cache.close_now()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{folder}/index.sqlite3{suffix}").unlink(missing_ok=True)
    an_hour_ago = time.time() - 3600  # older than a write in progress
    for path in (folder / "entries").glob("*/*"):
        os.utime(path, (an_hour_ago, an_hour_ago))

    cache = DiskCache(folder, 1 << 20, max_entry_bytes=1 << 16)
    try:
        assert cache.entries == 0  # a new, empty index …
        cache.sweep()  # … which the sweep at start fills from the files
        cache.flush()
        assert (cache.entries, cache.bytes) == (5, held)
        assert all(cache.peek(f"key {n}").body == entry(n, 10_000).body for n in range(5))
        cache.drop_image("i3")  # adopted rows know their image
        cache.flush()
        assert cache.peek("key 3") is None and cache.entries == 4
    finally:
        cache.close_now()
