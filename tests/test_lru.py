"""The L1: a byte-bounded LRU of ready responses, dropped per image on invalidation."""

from __future__ import annotations

from edge.lru import Entry, ExpiringMap, ResponseCache


def entry(image_id: str, size: int) -> Entry:
    return Entry(200, [(b"etag", b'"e"')], [(b"etag", b'"e"')], b"x" * size, '"e"', image_id)


def test_get_returns_what_was_put_and_counts_hits_and_misses() -> None:
    cache = ResponseCache(max_bytes=10_000, max_entry_bytes=5_000)
    assert cache.get("k") is None
    cache.put("k", entry("img", 100))
    got = cache.get("k")
    assert got is not None and got.body == b"x" * 100
    assert (cache.hits, cache.misses) == (1, 1)


def test_bytes_stay_under_the_bound_and_count_body_and_headers() -> None:
    cache = ResponseCache(max_bytes=3_000, max_entry_bytes=3_000)
    for i in range(20):
        cache.put(f"k{i}", entry(f"img{i}", 500))
        assert cache.bytes <= 3_000
    assert cache.bytes == sum(e.cost for e in cache._entries.values())
    assert all(e.cost > 500 for e in cache._entries.values())  # headers and overhead count
    assert cache.evictions == 20 - len(cache)


def test_least_recently_used_is_evicted_first() -> None:
    cache = ResponseCache(max_bytes=3 * 1_300, max_entry_bytes=2_000)
    for key in ("a", "b", "c"):
        cache.put(key, entry(key, 1_000))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", entry("d", 1_000))
    assert "b" not in cache
    assert {"a", "c", "d"} <= {k for k in ("a", "b", "c", "d") if k in cache}


def test_entries_over_the_entry_limit_are_not_kept() -> None:
    cache = ResponseCache(max_bytes=100_000, max_entry_bytes=1_000)
    assert not cache.put("big", entry("img", 1_001))
    assert "big" not in cache and cache.bytes == 0
    assert not cache.fits(1_001) and cache.fits(1_000)


def test_replacing_a_key_does_not_leak_bytes() -> None:
    cache = ResponseCache(max_bytes=100_000, max_entry_bytes=10_000)
    cache.put("k", entry("img", 1_000))
    cache.put("k", entry("img", 2_000))
    assert len(cache) == 1
    assert cache.bytes == cache._entries["k"].cost


def test_drop_image_removes_every_entry_of_that_image() -> None:
    cache = ResponseCache(max_bytes=100_000, max_entry_bytes=10_000)
    cache.put("live-a", entry("img1", 100))
    cache.put("live-b", entry("img1", 100))
    cache.put("img\x1fimg1", entry("img1", 100))
    cache.put("other", entry("img2", 100))
    assert cache.drop_image("img1") == 3
    assert len(cache) == 1 and "other" in cache
    assert cache.bytes == cache._entries["other"].cost
    assert cache.drop_image("img1") == 0


def test_evicted_entries_leave_the_image_map() -> None:
    cache = ResponseCache(max_bytes=1_500, max_entry_bytes=1_500)
    cache.put("a", entry("img1", 1_000))
    cache.put("b", entry("img2", 1_000))  # evicts a
    assert "a" not in cache
    assert cache.drop_image("img1") == 0
    assert "b" in cache


def test_expiring_map_forgets_after_ttl_and_stays_bounded() -> None:
    now = [0.0]
    values: ExpiringMap[str, int] = ExpiringMap(10.0, max_items=2, clock=lambda: now[0])
    values.set("a", 1)
    assert values.get("a") == (True, 1)
    now[0] = 10.5
    assert values.get("a") == (False, None)
    values.set("a", 1)
    values.set("b", 2)
    values.set("c", 3)
    assert len(values) == 2 and values.get("a") == (False, None)
    assert values.drop_where(lambda v: v == 2) == 1
    assert values.get("b") == (False, None)
