import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

from ccc_nodes.core.cache import ModelCache


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


def test_a_weak_cache_lets_a_network_go_when_its_owner_does():
    """Inside ComfyUI the host owns the networks: when it drops them (POST /free), the cache
    must not keep them alive; while it holds them, they are not loaded twice."""
    import gc

    from torch import nn

    cache, loads = ModelCache(weak=True), []

    def load():
        loads.append(1)
        return nn.Linear(256, 256)

    held = cache.get(("ccc", "a"), load)
    assert cache.get(("ccc", "a"), load) is held and len(loads) == 1 and ("ccc", "a") in cache
    probe = weakref.ref(held)
    del held
    gc.collect()
    assert probe() is None and ("ccc", "a") not in cache and len(cache) == 0  # nothing kept it alive
    cache.get(("ccc", "a"), load)
    assert len(loads) == 2  # asked again: loaded again


def test_one_file_under_two_paths_is_one_network(tmp_path):
    from ccc_nodes.core.cache import source_key

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "sam.pth").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "models")
    a, b = tmp_path / "models" / "sam.pth", tmp_path / "link" / ".." / "models" / "sam.pth"
    assert source_key(str(a)) == source_key(str(b)) == source_key(tmp_path / "link" / "sam.pth") == str(a.resolve())
    assert source_key("owner/repo") == "owner/repo" and source_key("default") == "default"
