"""The disk tier: ready responses in files on the edge host, between the L1 and storage.

An L1 miss costs a local read instead of an object-store round trip, so storage is read about
once per key per host. A disk entry is the L1 entry itself (status, headers, ETag, image id,
body), so a disk hit is the same response an L1 hit is; the edge promotes it into the L1.

DISK_CACHE_DIR holds

    entries/ab/ab12…   one file per response, named by the xxh3_128 of its L1 key
    tmp/               files being written, renamed into entries/ once complete
    index.sqlite3      what is there (size, image id, eviction state) and the totals

**Crash safety.** An entry is written under tmp/ and renamed into place, so a reader finds a
whole file or none. Every read checks the file's size against its header and an xxh3 checksum
over header, meta and body: a torn or truncated file (a crash, a full disk, a bad sector) is
removed and counted as a repair, never served. A row enters the index before its file is
renamed in and leaves it after the file is unlinked, so the byte count errs high, never low;
the sweep at start mends what a SIGKILL left between the two, adopting files the index lacks
(the index is rebuilt from the directory when it is lost).

**Workers.** With --workers N every worker opens the same directory, so the bytes are on disk
and in the page cache once. The index is one SQLite database in WAL mode: each worker writes
its own entries and evicts under `BEGIN IMMEDIATE`, so the byte bound holds for the host, not
per worker. Reads never touch SQLite: a lookup is open + fstat + two preads on the event loop
(about 16 µs for 100 KB on this machine; a thread-pool hop per read costs 100 µs more). Only a
file outside the page cache (RWF_NOWAIT says so) is read on a thread. A file a process has
read whole (checksum and all) is remembered (`open_checked`): while it is the same file, the
fast path sends it again with os.sendfile, the body never entering Python. Which entries were
read goes to the index in a batch once a second, for eviction. Writes (in batches), evictions
and drops run on one writer thread per worker.

**Eviction** is SIEVE (Zhang et al., NSDI '24): insertion order plus a visited bit, a hand that
spares visited entries once. It kept more of a Zipf(0.9) long tail than LRU (the comparison is
in docs/benchmarks.md); `policy="lru"` is kept for that comparison.

**Invalidation and restarts.** `drop_image` and `clear` make entries unservable in this process
at once and remove their files on the writer thread; every worker and edge hears the event
itself. While the edge follows the invalidation log, the Redis time it has followed up to is
recorded; at start the deletes it missed while down are read back from the log and applied, or,
when they cannot be known (log trimmed, Redis lost its data), everything is dropped. Until then,
entries older than the start are not served.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import itertools
import logging
import os
import sqlite3
import struct
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from cache.invalidation import EPOCH_KEY, EVERYTHING, STREAM, Invalidation
from cache.settings import Settings
from edge.lru import Entry, Headers

log = logging.getLogger("banatie.edge.disk")

MAGIC = b"BNTDSK01"
# magic, meta length, flags, body length, written at (ns), then the checksum of all before
# it plus meta and body.
_HEAD = struct.Struct("<8sIIQQ")
_CHECKSUM = struct.Struct("<Q")
HEAD_SIZE = _HEAD.size + _CHECKSUM.size
FIRST_READ = 4096  # header and meta, usually in one page
MAX_META = 1 << 20
SCHEMA = "1"
MAX_PENDING_BYTES = 64 * 1024 * 1024  # bodies waiting to be written; more are not kept
WRITE_BATCH = 64
FLUSH_S = 1.0  # how often reads are recorded for eviction, and the totals refreshed
HEARTBEAT_S = 1.0  # how often the followed position in the invalidation log is recorded
CATCH_UP_RETRY_S = 1.0
REPLAY_MARGIN_MS = 60_000  # replayed before the recorded position: events in flight, skew
SWEEP_GRACE_S = 60.0  # files and rows younger than this are a write in progress
EVICT_BATCH = 256
MAX_CHECKED = 16_384  # files remembered as read whole, for os.sendfile (~600 bytes each)
_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)


class WouldBlock(Exception):
    """The entry is on disk but not in the page cache: read it off the event loop."""


@dataclass(slots=True)
class FileBody:
    """A response body to send straight from its file (os.sendfile); whoever sends it
    closes `fd`."""

    fd: int
    offset: int
    size: int

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True, slots=True)
class Checked:
    """A file this process read whole and found sound: what it needs to send it again
    without reading it (its identity on disk, the response's head)."""

    ino: int
    size: int
    mtime_ns: int
    written_ns: int
    body_offset: int
    status: int
    wire: bytes
    wire_not_modified: bytes
    etag: str
    image_id: str


def digest_of(key: str) -> str:
    """The file name of an L1 key."""
    return xxhash.xxh3_128_hexdigest(key.encode("utf-8", "surrogatepass"))


def open_disk_cache(settings: Settings) -> DiskCache | None:
    """The disk tier the settings ask for (None: DISK_CACHE_BYTES=0)."""
    if settings.disk_cache_bytes <= 0:
        return None
    return DiskCache(
        settings.disk_cache_dir,
        settings.disk_cache_bytes,
        max_entry_bytes=settings.l1_max_entry_bytes,
    )


class DiskCache:
    """A byte-bounded cache of L1 entries in files, shared by the processes of one host."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        max_entry_bytes: int = 8 * 1024 * 1024,
        policy: str = "sieve",
    ) -> None:
        if policy not in ("sieve", "lru"):
            raise ValueError(f"unknown eviction policy {policy!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # One entry may take at most an eighth of the cache: the bound stays meaningful.
        self.max_entry_bytes = min(max_entry_bytes, max_bytes // 8)
        self.policy = policy
        self._entries = str(self.directory / "entries") + "/"
        self._tmp = str(self.directory / "tmp") + "/"
        # Counted in this process (like every metric); bytes and entries are the host's.
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.repairs = 0  # torn or truncated files found and removed
        self.skipped_writes = 0  # not kept: MAX_PENDING_BYTES were waiting
        self.thread_reads = 0  # hits read on a thread: the file was not in the page cache
        self.file_sends = 0  # hits handed out as files to send (open_checked)
        self.bytes = 0
        self.entries = 0
        self._nowait = _RWF_NOWAIT
        self._probe = bytearray(1)
        self._visited: set[str] = set()  # digests read since the last flush
        self._checked: OrderedDict[str, Checked] = OrderedDict()  # LRU, MAX_CHECKED
        self._dropping: dict[str, int] = {}  # image id → drops in flight: never served
        self._dropping_lock = threading.Lock()
        self._cleared_ns = 0  # entries written before this are gone (EVERYTHING)
        self._started_ns = time.time_ns()
        self._trust_from_ns = 0  # until the catch-up is done: entries older than the start
        self._queue: deque[tuple[str, str, Entry, int]] = deque()  # (digest, key, entry, ns)
        self._queued_bytes = 0  # body bytes queued (event loop) …
        self._written_bytes = 0  # … and taken off the queue (writer thread)
        self._tmp_names = itertools.count()
        self._warned_at = -60.0
        self._tasks: list[asyncio.Task[None]] = []
        self._sweeper: threading.Thread | None = None
        self._following: tuple[Any, Callable[[], bool]] | None = None  # (redis, following)
        self._closing = threading.Event()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="banatie-disk")
        self._db: sqlite3.Connection | None = None  # the writer thread's
        self._writer.submit(self._open).result()

    # -- reads (event loop) -------------------------------------------------------------------

    def peek(self, key: str) -> Entry | None:
        """The entry for `key` if its file is whole; None if there is none (not counted as a
        miss: the caller asks `get` next). Raises WouldBlock when the file is not in the page
        cache, so a sync caller never waits on the disk."""
        digest = digest_of(key)
        entry = self._read(digest, key, nowait=True, remember=True)
        if entry is not None:
            self.hits += 1
            self._visited.add(digest)
        return entry

    def open_checked(self, key: str) -> tuple[Checked, FileBody] | None:
        """A file this process has read whole (checksum and all) and that is still the same
        file, in the page cache: its head, and its body to send from the file without
        reading it. None: read it with `peek` (which checks it, and remembers it)."""
        digest = digest_of(key)
        checked = self._checked.get(digest)
        if checked is None:
            return None
        if (
            checked.written_ns < self._cleared_ns
            or checked.written_ns < self._trust_from_ns
            or checked.image_id in self._dropping
        ):
            return None
        try:
            fd = os.open(self._path(digest), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            del self._checked[digest]
            return None
        try:
            st = os.fstat(fd)
            same = (st.st_ino, st.st_size, st.st_mtime_ns) == (
                checked.ino,
                checked.size,
                checked.mtime_ns,
            )
            if not same or (self._nowait and not self._cached(fd, st.st_size)):
                if not same:
                    del self._checked[digest]  # replaced: the next read checks it again
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        self._checked.move_to_end(digest)
        self.hits += 1
        self.file_sends += 1
        self._visited.add(digest)
        return checked, FileBody(fd, checked.body_offset, checked.size - checked.body_offset)

    async def get(self, key: str) -> Entry | None:
        """The entry for `key`, or None; a file outside the page cache is read on a thread."""
        digest = digest_of(key)
        try:
            entry = self._read(digest, key, nowait=True, remember=True)
        except WouldBlock:
            self.thread_reads += 1
            entry = await asyncio.get_running_loop().run_in_executor(
                None, self._read, digest, key, False
            )
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._visited.add(digest)
        return entry

    def _read(self, digest: str, key: str, nowait: bool, remember: bool = False) -> Entry | None:
        """The entry in the file, checked whole; `remember` (event loop only) notes the file
        as sound, so `open_checked` may send it without reading it."""
        path = self._path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            size = st.st_size
            if size < HEAD_SIZE:
                self._torn(path, digest, "shorter than its header")
                return None
            if nowait and self._nowait and not self._cached(fd, size):
                raise WouldBlock(key)
            head = os.pread(fd, min(size, FIRST_READ), 0)
            magic, meta_len, _flags, body_len, written_ns = _HEAD.unpack_from(head)
            if magic != MAGIC or meta_len > MAX_META or size != HEAD_SIZE + meta_len + body_len:
                self._torn(path, digest, "not the size its header gives")
                return None
            if written_ns < self._cleared_ns or written_ns < self._trust_from_ns:
                return None  # from before a clear, or not yet checked against the log
            meta_end = HEAD_SIZE + meta_len
            meta = head[HEAD_SIZE:meta_end]
            if len(meta) < meta_len:
                meta = os.pread(fd, meta_len, HEAD_SIZE)
            body = os.pread(fd, body_len, meta_end) if body_len else b""
        finally:
            os.close(fd)
        if len(meta) != meta_len or len(body) != body_len:
            self._torn(path, digest, "shorter than its header gives")
            return None
        check = xxhash.xxh3_64(head[: _HEAD.size])
        check.update(meta)
        check.update(body)
        if check.intdigest() != _CHECKSUM.unpack_from(head, _HEAD.size)[0]:
            self._torn(path, digest, "checksum mismatch")
            return None
        try:
            stored_key, status, etag, image_id, wire, wire_not_modified = meta.split(b"\x00", 5)
            if stored_key.decode("utf-8", "surrogatepass") != key:
                return None  # another key with the same 128-bit digest: never serve it
            entry = Entry(
                int(status),
                _parse_headers(wire),
                _parse_headers(wire_not_modified),
                body,
                etag.decode("latin-1"),
                image_id.decode("latin-1"),
                wire=wire,  # as the L1 would make them: it keeps these
                wire_not_modified=wire_not_modified,
            )
        except ValueError:
            self._torn(path, digest, "unreadable meta")
            return None
        if entry.image_id in self._dropping:
            return None
        if remember:
            self._checked[digest] = Checked(
                st.st_ino, size, st.st_mtime_ns, written_ns, meta_end, entry.status,
                wire, wire_not_modified, entry.etag, entry.image_id,
            )  # fmt: skip
            self._checked.move_to_end(digest)
            if len(self._checked) > MAX_CHECKED:
                self._checked.popitem(last=False)
        return entry

    def _cached(self, fd: int, size: int) -> bool:
        """Whether the file's last page is in the page cache (RWF_NOWAIT): files are read and
        written whole, front to back, so the last page is the one to miss (one probe costs
        about 1 µs; two cost a tenth of a disk hit)."""
        try:
            os.preadv(fd, [self._probe], size - 1, self._nowait)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._nowait = 0  # this filesystem cannot say: read as if cached
        return True

    def _torn(self, path: str, digest: str, why: str) -> None:
        log.warning("disk cache: removing %s (%s)", path, why)
        with contextlib.suppress(OSError):
            os.unlink(path)
        self.repairs += 1
        self._submit(self._forget_if_missing, digest)

    # -- writes (queued from the event loop, done on the writer thread) ------------------------

    def put(self, key: str, entry: Entry) -> None:
        """Keep `entry` under `key`: queued, written on the writer thread in batches; not kept
        when MAX_PENDING_BYTES already wait (the response was sent anyway)."""
        size = len(entry.body)
        if size > self.max_entry_bytes or entry.image_id in self._dropping:
            return
        if self._queued_bytes - self._written_bytes + size > MAX_PENDING_BYTES:
            self.skipped_writes += 1
            return
        self._queued_bytes += size
        # The time is taken now: a clear heard after this moment drops the entry.
        self._queue.append((digest_of(key), key, entry, time.time_ns()))
        self._submit(self._write_queued)

    def drop_image(self, image_id: str) -> None:
        """Every entry of this image: unservable now, its files removed on the writer thread."""
        with self._dropping_lock:
            self._dropping[image_id] = self._dropping.get(image_id, 0) + 1
        self._submit(self._drop_image, image_id)

    def clear(self) -> None:
        """Every entry written until now: unservable now, removed on the writer thread."""
        self._checked.clear()
        self._cleared_ns = time.time_ns()
        self._submit(self._clear, self._cleared_ns)

    def read_now(self, key: str) -> Entry | None:
        """`get` without an event loop: the thread's own read, page cache or not (for tests
        and the bench)."""
        try:
            return self.peek(key)
        except WouldBlock:
            entry = self._read(digest_of(key), key, nowait=False)
            if entry is not None:
                self.hits += 1
                self._visited.add(digest_of(key))
            return entry

    def flush(self) -> None:
        """Wait for queued writes and record the reads so far (for tests and the bench)."""
        visited, self._visited = self._visited, set()
        self._writer.submit(self._record_visits, visited).result()

    def _submit(self, job: Callable[..., Any], *args: Any) -> Future[Any] | None:
        try:
            return self._writer.submit(self._guarded, job, *args)
        except RuntimeError:  # closed
            return None

    def _guarded(self, job: Callable[..., Any], *args: Any) -> Any:
        try:
            return job(*args)
        except Exception:
            log.exception("disk cache: %s failed", job.__name__)
            return None

    def _write_queued(self) -> None:
        """Everything queued, in one batch: one transaction for the rows, one for eviction,
        one look for rows another worker evicted meanwhile. Under a flood of misses the
        writer thread gets the GIL only now and then; a batch needs it far fewer times."""
        batch: list[tuple[str, str, Entry, int]] = []
        while self._queue and len(batch) < WRITE_BATCH:
            batch.append(self._queue.popleft())
        if not batch:
            return
        try:
            self._write_batch(batch)
        finally:
            self._written_bytes += sum(len(entry.body) for _, _, entry, _ in batch)

    def _write_batch(self, batch: list[tuple[str, str, Entry, int]]) -> None:
        files = []
        for digest, key, entry, written_ns in batch:
            if written_ns < self._cleared_ns or entry.image_id in self._dropping:
                continue
            meta = b"\x00".join(
                (
                    key.encode("utf-8", "surrogatepass"),
                    str(entry.status).encode(),
                    entry.etag.encode("latin-1"),
                    entry.image_id.encode("latin-1"),
                    _wire(entry.headers),
                    _wire(entry.not_modified_headers),
                )
            )
            head = _HEAD.pack(MAGIC, len(meta), 0, len(entry.body), written_ns)
            check = xxhash.xxh3_64(head)
            check.update(meta)
            check.update(entry.body)
            head += _CHECKSUM.pack(check.intdigest())
            files.append((digest, entry.image_id, written_ns, [head, meta, entry.body]))
        if not files:
            return
        # The rows first: the byte count may exceed what is on disk, never fall short of it.
        now = time.time_ns()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO entries (hash, image_id, size, written_ns, used, visited)"
                " VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (hash) DO UPDATE SET"
                " image_id = excluded.image_id, size = excluded.size,"
                " written_ns = excluded.written_ns, used = excluded.used, visited = 1",
                [
                    (digest, image_id, sum(map(len, parts)), written_ns, now)
                    for digest, image_id, written_ns, parts in files
                ],
            )
        self._make_room()
        written = [digest for digest, _, _, parts in files if self._write_file(digest, parts)]
        # Another worker may have evicted a row meanwhile: then its file goes too.
        kept: set[str] = set()
        for start in range(0, len(written), 500):
            chunk = written[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT hash FROM entries WHERE hash IN ({marks})"
            kept.update(row[0] for row in self._db_().execute(query, chunk))
        for digest in written:
            if digest not in kept:
                with contextlib.suppress(OSError):
                    os.unlink(self._path(digest))

    def _write_file(self, digest: str, parts: list[bytes]) -> bool:
        """Temp file, then rename into place: a reader sees the whole file or none."""
        tmp = f"{self._tmp}{digest}.{os.getpid()}.{next(self._tmp_names)}"
        path = self._path(digest)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, parts)
            finally:
                os.close(fd)
            try:
                os.rename(tmp, path)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.rename(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._forget_if_missing(digest)
            if time.monotonic() - self._warned_at > 60:  # a full disk says so once a minute
                self._warned_at = time.monotonic()
                log.warning("disk cache: entry not kept (%s)", e)
            return False
        return True

    def _make_room(self) -> None:
        while True:
            with self._transaction() as db:
                total = db.execute("SELECT bytes FROM totals").fetchone()[0]
                if total <= self.max_bytes:
                    return
                pick = self._sieve if self.policy == "sieve" else self._lru
                victims = pick(db, total - self.max_bytes)
                for digest in victims:
                    with contextlib.suppress(OSError):
                        os.unlink(self._path(digest))
                db.executemany("DELETE FROM entries WHERE hash = ?", [(d,) for d in victims])
            self.evictions += len(victims)
            if not victims:
                return

    def _sieve(self, db: sqlite3.Connection, need: int) -> list[str]:
        """SIEVE: from the hand toward newer entries, spare (and unmark) visited ones,
        evict unvisited ones; wrap around to the oldest."""
        hand = int(_state(db, "hand") or 0)
        victims: list[str] = []
        spared: set[int] = set()
        freed, laps = 0, 0
        while freed < need and laps < 3:
            rows = db.execute(
                "SELECT rowid, hash, size, visited FROM entries WHERE rowid > ?"
                " ORDER BY rowid LIMIT ?",
                (hand, EVICT_BATCH),
            ).fetchall()
            if not rows:
                hand, laps = 0, laps + 1
                continue
            for rowid, digest, size, visited in rows:
                hand = rowid
                if visited and rowid not in spared:
                    spared.add(rowid)
                elif digest not in victims:
                    victims.append(digest)
                    freed += size
                    if freed >= need:
                        break
        db.executemany("UPDATE entries SET visited = 0 WHERE rowid = ?", [(r,) for r in spared])
        _set_state(db, "hand", str(hand))
        return victims

    def _lru(self, db: sqlite3.Connection, need: int) -> list[str]:
        victims: list[str] = []
        freed = 0
        for digest, size in db.execute("SELECT hash, size FROM entries ORDER BY used"):
            victims.append(digest)
            freed += size
            if freed >= need:
                break
        return victims

    def _drop_image(self, image_id: str) -> None:
        try:
            with self._transaction() as db:
                rows = db.execute("SELECT hash FROM entries WHERE image_id = ?", (image_id,))
                for (digest,) in rows.fetchall():
                    with contextlib.suppress(OSError):
                        os.unlink(self._path(digest))
                db.execute("DELETE FROM entries WHERE image_id = ?", (image_id,))
        finally:
            with self._dropping_lock:
                left = self._dropping.get(image_id, 1) - 1
                if left > 0:
                    self._dropping[image_id] = left
                else:
                    self._dropping.pop(image_id, None)

    def _clear(self, before_ns: int) -> None:
        with self._transaction() as db:
            saved = int(_state(db, "cleared_ns") or 0)
            _set_state(db, "cleared_ns", str(max(saved, before_ns)))
        while not self._closing.is_set():
            with self._transaction() as db:
                rows = db.execute(
                    "SELECT hash FROM entries WHERE written_ns < ? LIMIT 1000", (before_ns,)
                ).fetchall()
                for (digest,) in rows:
                    with contextlib.suppress(OSError):
                        os.unlink(self._path(digest))
                db.executemany("DELETE FROM entries WHERE hash = ?", rows)
            if not rows:
                return

    def _forget_if_missing(self, digest: str) -> None:
        if not os.path.exists(self._path(digest)):
            with self._transaction() as db:
                db.execute("DELETE FROM entries WHERE hash = ?", (digest,))

    def _record_visits(self, digests: set[str]) -> None:
        """Reads since the last flush, for eviction; then the host's totals."""
        db = self._db_()
        if digests:
            column = "visited = 1" if self.policy == "sieve" else "used = ?"
            now = (time.time_ns(),) if self.policy == "lru" else ()
            with self._transaction():
                db.executemany(
                    f"UPDATE entries SET {column} WHERE hash = ?", [(*now, d) for d in digests]
                )
        self.bytes, self.entries = db.execute("SELECT bytes, entries FROM totals").fetchone()

    # -- the index (writer thread) ------------------------------------------------------------

    def _open(self) -> None:
        for folder in (self.directory, Path(self._entries), Path(self._tmp)):
            folder.mkdir(parents=True, exist_ok=True)
        path = self.directory / "index.sqlite3"
        try:
            self._db = _connect(path)
            if _state(self._db, "schema") not in (None, SCHEMA):
                raise sqlite3.DatabaseError("another schema version")
        except sqlite3.DatabaseError as e:
            # Unreadable, or another version's: start empty (the sweep adopts what is usable).
            log.warning("disk cache: index %s unusable (%s); starting a new one", path, e)
            if self._db is not None:
                self._db.close()
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
            self._db = _connect(path)
        db = self._db
        self._cleared_ns = int(_state(db, "cleared_ns") or 0)
        self.bytes, self.entries = db.execute("SELECT bytes, entries FROM totals").fetchone()

    def _db_(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db_()
        db.execute("BEGIN IMMEDIATE")  # the write lock now: workers take turns
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _path(self, digest: str) -> str:
        return f"{self._entries}{digest[:2]}/{digest}"

    # -- start and stop -----------------------------------------------------------------------

    async def start(self, redis: Any = None, following: Callable[[], bool] | None = None) -> None:
        """Record reads, sweep the directory, and (with the invalidation log in Redis:
        `redis`, and `following` true while the bus reads it) catch up with what was
        deleted while this edge was down, then keep its position recorded."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._flush_every(), name="banatie-disk-flush"))
        self._sweeper = threading.Thread(target=self.sweep, name="banatie-disk-sweep", daemon=True)
        self._sweeper.start()
        log.info(
            "disk cache %s: %d entries, %.1f of %.1f MB (%s)",
            self.directory, self.entries, self.bytes / 2**20, self.max_bytes / 2**20, self.policy,
        )  # fmt: skip
        if redis is None:
            return  # no log: deletes made while this edge was down cannot reach it anyway
        self._trust_from_ns = self._started_ns
        if not await self._catch_up(redis):
            self._tasks.append(loop.create_task(self._catch_up_later(redis)))
        if following is not None:
            self._following = (redis, following)
            self._tasks.append(loop.create_task(self._heartbeat(redis, following)))

    async def close(self) -> None:
        if self._following is not None:  # a last position, so a restart replays little
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._beat(*self._following), 2)
        self._closing.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        visited, self._visited = self._visited, set()
        self._submit(self._record_visits, visited)
        self._submit(self._close_db)
        await asyncio.get_running_loop().run_in_executor(None, self._writer.shutdown)
        if self._sweeper is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._sweeper.join, 5)

    def close_now(self) -> None:
        """Stop without an event loop (tests and the bench's policy comparison)."""
        self._closing.set()
        self._submit(self._close_db)
        self._writer.shutdown()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            visited, self._visited = self._visited, set()
            self._submit(self._record_visits, visited)

    async def _catch_up(self, redis: Any) -> bool:
        """Apply the deletes of the invalidation log this cache has not seen; False when
        Redis cannot say now (entries older than the start stay unserved meanwhile)."""
        loop = asyncio.get_running_loop()
        try:
            saved_epoch, saved_ms = await loop.run_in_executor(self._writer, self._position)
            if self.entries == 0:
                reason = ""
            else:
                epoch = await redis.get(EPOCH_KEY)
                if saved_epoch is None:
                    reason = "no position in the invalidation log was recorded"
                elif epoch is None or epoch.decode() != saved_epoch:
                    reason = "Redis lost the invalidation log"
                else:
                    events = await _missed(redis, saved_ms - REPLAY_MARGIN_MS)
                    reason = "" if events is not None else "the log was trimmed past our position"
                    for event in events or ():
                        if event.image_id == EVERYTHING:
                            reason = "the log says to drop everything"
                        elif event.image_id:
                            self.drop_image(event.image_id)
                    if events:
                        log.info("disk cache: applied %d missed invalidations", len(events))
        except Exception as e:  # Redis errors: try again shortly
            log.warning("disk cache: cannot read the invalidation log yet (%s)", e)
            return False
        if reason:
            log.warning("disk cache: dropping every entry: %s", reason)
            self.clear()
        self._trust_from_ns = 0
        return True

    async def _catch_up_later(self, redis: Any) -> None:
        while True:
            await asyncio.sleep(CATCH_UP_RETRY_S)
            if await self._catch_up(redis):
                break

    async def _heartbeat(self, redis: Any, following: Callable[[], bool]) -> None:
        while True:
            await self._beat(redis, following)
            await asyncio.sleep(HEARTBEAT_S)

    async def _beat(self, redis: Any, following: Callable[[], bool]) -> None:
        """While caught up and following the log: record the Redis time followed up to."""
        if self._trust_from_ns != 0 or not following():
            return
        try:
            now = await redis.time()
            if isinstance(now, dict):  # a cluster client asks one node and says which
                now = next(iter(now.values()))
            seconds, micros = now
            epoch = await redis.get(EPOCH_KEY)
        except Exception as e:  # Redis errors: the next beat records it
            log.debug("disk cache: position not recorded: %s", e)
            return
        if epoch is not None:
            ms = int(seconds) * 1000 + int(micros) // 1000
            self._submit(self._record_position, epoch.decode(), ms)

    def _position(self) -> tuple[str | None, int]:
        db = self._db_()
        return _state(db, "epoch"), int(_state(db, "followed_ms") or 0)

    def _record_position(self, epoch: str, ms: int) -> None:
        with self._transaction() as db:
            _set_state(db, "epoch", epoch)
            _set_state(db, "followed_ms", str(ms))

    # -- the sweep (its own thread, one process at a time) ------------------------------------

    def sweep(self) -> None:
        """Mend what crashes left (run at start, on a thread of its own): temp files, files
        without rows (adopted when whole, so a lost index is rebuilt), rows without files;
        then make room if adoption overfilled."""
        with open(self.directory / "sweep.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another worker sweeps
            try:
                found = self._sweep_locked()
            except Exception:
                log.exception("disk cache: sweep failed")
                return
        if found:
            self._submit(self._make_room)

    def _sweep_locked(self) -> int:
        started = time.monotonic()
        cutoff = time.time() - SWEEP_GRACE_S
        with contextlib.suppress(OSError), os.scandir(self._tmp) as tmp:
            for item in tmp:
                if item.stat().st_mtime < cutoff:
                    with contextlib.suppress(OSError):
                        os.unlink(item.path)
        db = _connect(self.directory / "index.sqlite3")
        adopted = forgotten = files = 0
        last_log = started
        try:
            for shard in range(256):
                if self._closing.is_set():
                    break
                prefix = f"{shard:02x}"
                try:
                    with os.scandir(self._entries + prefix) as listing:
                        on_disk = {item.name: item.stat().st_mtime for item in listing}
                except FileNotFoundError:
                    on_disk = {}
                files += len(on_disk)
                upper = f"{shard + 1:02x}" if shard < 255 else "g"
                rows = dict(
                    db.execute(
                        "SELECT hash, written_ns FROM entries WHERE hash >= ? AND hash < ?",
                        (prefix, upper),
                    ).fetchall()
                )
                for name, mtime in on_disk.items():
                    if name not in rows and mtime < cutoff:
                        adopted += self._adopt(db, name)
                gone = [
                    (name, written)
                    for name, written in rows.items()
                    if name not in on_disk and written < cutoff * 1e9
                ]
                if gone:
                    db.execute("BEGIN IMMEDIATE")
                    db.executemany("DELETE FROM entries WHERE hash = ? AND written_ns = ?", gone)
                    db.execute("COMMIT")
                    forgotten += len(gone)
                if time.monotonic() - last_log > 5:
                    last_log = time.monotonic()
                    log.info(
                        "disk cache: sweeping, %d of 256 folders (%d files, %d adopted)",
                        shard + 1, files, adopted,
                    )  # fmt: skip
        finally:
            db.close()
        if adopted or forgotten or time.monotonic() - started > 5:
            log.info(
                "disk cache: swept %d files in %.1f s: %d adopted, %d missing rows dropped",
                files, time.monotonic() - started, adopted, forgotten,
            )  # fmt: skip
        return adopted

    def _adopt(self, db: sqlite3.Connection, name: str) -> int:
        """A file the index lacks: its row back when the header reads whole, else removed."""
        path = self._entries + name[:2] + "/" + name
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(FIRST_READ)
            magic, meta_len, _flags, body_len, written_ns = _HEAD.unpack_from(head)
            meta = head[HEAD_SIZE : HEAD_SIZE + meta_len]
            _key, _status, _etag, image_id, _rest = meta.split(b"\x00", 4)
            whole = magic == MAGIC and size == HEAD_SIZE + meta_len + body_len
        except (OSError, struct.error, ValueError):
            whole, written_ns, image_id = False, 0, b""
        if not whole or written_ns < self._cleared_ns:
            with contextlib.suppress(OSError):
                os.unlink(path)
            return 0
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT OR IGNORE INTO entries (hash, image_id, size, written_ns, used, visited)"
            " VALUES (?, ?, ?, ?, ?, 0)",
            (name, image_id.decode("latin-1"), size, written_ns, written_ns),
        )
        db.execute("COMMIT")
        return 1


# -- the invalidation log, read back at start ------------------------------------------------


async def _missed(redis: Any, since_ms: int) -> list[Invalidation] | None:
    """The log's events from `since_ms` (Redis time) on; None when some may be trimmed."""
    from redis.exceptions import ResponseError

    try:
        info = await redis.xinfo_stream(STREAM)
    except ResponseError as e:
        if "no such key" in str(e).lower():
            return []  # no log, and the epoch is the one we recorded: nothing was deleted
        raise
    deleted = info.get("max-deleted-entry-id")  # Redis 7: the newest entry trimmed away
    first = info.get("first-entry")
    if deleted is not None:
        if _entry_ms(deleted) >= since_ms:
            return None
    elif first is None or _entry_ms(first[0]) > since_ms:  # older Redis: cannot tell
        return None
    if first is None:
        return []
    events: list[Invalidation] = []
    start = f"{max(since_ms, 0)}-0"
    while True:
        batch = await redis.xrange(STREAM, min=start, max="+", count=500)
        for _id, fields in batch:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                events.append(Invalidation.from_json(fields.get(b"event", b""))[0])
        if len(batch) < 500:
            return events
        last_id = batch[-1][0]
        start = "(" + (last_id.decode() if isinstance(last_id, bytes) else str(last_id))


def _entry_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


# -- small pieces -----------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")  # a crash of the process loses nothing
    db.executescript(
        """
        BEGIN IMMEDIATE;
        CREATE TABLE IF NOT EXISTS entries (
            rowid INTEGER PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            image_id TEXT NOT NULL,
            size INTEGER NOT NULL,
            written_ns INTEGER NOT NULL,
            used INTEGER NOT NULL,
            visited INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX IF NOT EXISTS entries_by_image ON entries (image_id);
        CREATE INDEX IF NOT EXISTS entries_by_use ON entries (used);
        CREATE TABLE IF NOT EXISTS totals (
            id INTEGER PRIMARY KEY CHECK (id = 0),
            bytes INTEGER NOT NULL,
            entries INTEGER NOT NULL
        );
        INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
        CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT OR IGNORE INTO state VALUES ('schema', '1');
        CREATE TRIGGER IF NOT EXISTS entry_added AFTER INSERT ON entries BEGIN
            UPDATE totals SET bytes = bytes + NEW.size, entries = entries + 1;
        END;
        CREATE TRIGGER IF NOT EXISTS entry_removed AFTER DELETE ON entries BEGIN
            UPDATE totals SET bytes = bytes - OLD.size, entries = entries - 1;
        END;
        CREATE TRIGGER IF NOT EXISTS entry_resized AFTER UPDATE OF size ON entries BEGIN
            UPDATE totals SET bytes = bytes - OLD.size + NEW.size;
        END;
        COMMIT;
        """
    )
    return db


def _state(db: sqlite3.Connection, name: str) -> str | None:
    row = db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
    return None if row is None else row[0]


def _set_state(db: sqlite3.Connection, name: str, value: str) -> None:
    db.execute(
        "INSERT INTO state VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def _wire(headers: Headers) -> bytes:
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


def _parse_headers(wire: bytes) -> Headers:
    headers: Headers = []
    for line in wire.split(b"\r\n"):
        if line:
            name, sep, value = line.partition(b": ")
            if not sep:
                raise ValueError("a header line without a value")
            headers.append((name, value))
    return headers


def _write_all(fd: int, parts: list[bytes]) -> None:
    views = [memoryview(p) for p in parts if p]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
