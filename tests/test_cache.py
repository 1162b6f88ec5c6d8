import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ccc_nodes.cache import ModelCache


def test_loads_once_per_key_under_concurrency():
    cache = ModelCache(keep=2)
    calls = []

    def slow():
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return object()

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: cache.get(("ccc", "a"), slow), range(4)))
    assert len(calls) == 1 and all(g is got[0] for g in got)


def test_other_keys_are_not_held_up_by_a_slow_load():
    cache = ModelCache()
    started, release = threading.Event(), threading.Event()

    def blocked():
        started.set()
        release.wait(5)
        return "slow"

    t = threading.Thread(target=cache.get, args=(("ccc", "slow"), blocked))
    t.start()
    started.wait(5)
    assert cache.get(("ccc", "fast"), lambda: "fast") == "fast"  # answered while the other loads
    release.set()
    t.join()
    assert cache.get(("ccc", "slow"), lambda: "again") == "slow"


def test_bounded_per_kind_least_recently_used_first():
    cache = ModelCache(keep=2)
    for name in "abc":
        cache.get(("ccc", name), lambda n=name: n)
    cache.get(("sam", "x"), lambda: "x")
    assert ("ccc", "a") not in cache and ("ccc", "b") in cache and ("sam", "x") in cache
    cache.get(("ccc", "b"), lambda: "reloaded")  # b is now the most recent
    cache.get(("ccc", "d"), lambda: "d")
    assert ("ccc", "c") not in cache and cache.get(("ccc", "b"), lambda: "no") == "b"


def test_a_failed_load_is_not_cached():
    cache = ModelCache()

    def fail():
        raise OSError("no file")

    with pytest.raises(OSError):
        cache.get(("ccc", "bad"), fail)
    assert ("ccc", "bad") not in cache
    assert cache.get(("ccc", "bad"), lambda: 1) == 1


def test_no_second_load_while_the_first_is_being_stored():
    entered = threading.Event()

    class SlowStore(ModelCache):
        def put(self, key, value):
            entered.set()
            time.sleep(0.3)  # widen the moment between loading and storing
            super().put(key, value)

    cache = SlowStore()
    t = threading.Thread(target=cache.get, args=(("ccc", "a"), lambda: "first"))
    t.start()
    entered.wait(5)
    assert cache.get(("ccc", "a"), lambda: "second") == "first"
    t.join()
