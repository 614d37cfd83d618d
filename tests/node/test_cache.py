"""The node cache: atomic, digest-verified commits, recovery after a crash, eviction policy."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cache_support import sha256

from edgewise.contract import plan_cache_key
from edgewise.node.cache import (
    BlobInfo,
    CacheFull,
    NodeCache,
    PlanExists,
    plan_model_digest,
    select_evictions,
)
from edgewise.shared.digest import DigestMismatch, normalize_digest


def put(cache: NodeCache, data: bytes, *, model: str | None = None, plan_key: str | None = None) -> str:
    with cache.writer() as w:
        w.write(data)
        return cache.commit(w, sha256(data), model=model, plan_key=plan_key)


def test_commit_publishes_a_read_only_verified_blob(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    data = b"model bytes" * 1000
    digest = put(cache, data, model="m")
    assert cache.resolve(digest) == digest
    assert cache.path(digest).read_bytes() == data
    assert stat.S_IMODE(cache.path(digest).stat().st_mode) == 0o444
    assert list(cache.tmp_dir.iterdir()) == []
    assert cache.entries()[0]["models"] == ["m"]


def test_digest_mismatch_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    wrong = sha256(b"what the spec promised")
    with pytest.raises(DigestMismatch) as err, cache.writer() as w:
        w.write(b"what the source sent")
        cache.commit(w, wrong, model="m")
    assert err.value.expected == wrong and err.value.actual == sha256(b"what the source sent")
    assert cache.resolve(wrong) is None
    assert cache.entries() == []
    assert list(cache.blob_dir.iterdir()) == [] and list(cache.tmp_dir.iterdir()) == []


def test_an_aborted_write_leaves_no_file(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    with pytest.raises(RuntimeError), cache.writer() as w:
        w.write(b"half")
        raise RuntimeError("connection lost")
    assert list(cache.tmp_dir.iterdir()) == [] and cache.entries() == []


def test_reopening_drops_half_files_and_rebuilds_the_index_from_files(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    kept = put(cache, b"kept", model="m")
    (cache.tmp_dir / "crashed.part").write_bytes(b"half a model")
    (cache.blob_dir / "not-a-digest").write_bytes(b"junk")
    cache.index_path.write_text("{ torn json")
    reopened = NodeCache(tmp_path)
    assert list(reopened.tmp_dir.iterdir()) == []
    assert sorted(p.name for p in reopened.blob_dir.iterdir()) == [kept]
    assert [e["sha256"] for e in reopened.entries()] == [kept]


def test_index_survives_a_restart_and_forgets_blobs_whose_file_is_gone(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    a = put(cache, b"a", model="m")
    b = put(cache, b"b", model="m")
    (cache.blob_dir / b).unlink()
    reopened = NodeCache(tmp_path)
    assert [(e["sha256"], e["models"]) for e in reopened.entries()] == [(a, ["m"])]


def test_verify_deletes_a_blob_whose_bytes_changed_on_disk(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    digest = put(cache, b"original")
    reopened = NodeCache(tmp_path)  # a new process has not hashed it yet
    path = reopened.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"bit rot")
    assert reopened.scrub() == [digest]
    assert reopened.resolve(digest) is None and not path.exists()


def test_normalize_digest() -> None:
    hexd = "ab" * 32
    assert normalize_digest(f"sha256:{hexd.upper()}") == hexd
    with pytest.raises(ValueError):
        normalize_digest("../../etc/passwd")
    key = plan_cache_key(hexd, "8.7", "8.6.1", "fp16")
    assert plan_model_digest(key) == hexd and plan_model_digest(hexd) is None


# ---- eviction policy (pure) -------------------------------------------------------------------

def blobs(**sizes_and_seqs: tuple[int, int]) -> dict[str, BlobInfo]:
    return {d: BlobInfo(size, seq) for d, (size, seq) in sizes_and_seqs.items()}


def test_no_budget_means_no_eviction() -> None:
    assert select_evictions(blobs(a=(10, 1)), {}, {}, max_bytes=None) == []


def test_least_recently_used_goes_first_until_under_budget() -> None:
    b = blobs(old=(10, 1), mid=(10, 2), new=(10, 3))
    assert select_evictions(b, {}, {}, max_bytes=20) == ["old"]
    assert select_evictions(b, {}, {}, max_bytes=5) == ["old", "mid", "new"]


def test_the_last_two_digests_of_every_model_are_kept_even_over_budget() -> None:
    b = blobs(a1=(10, 1), a2=(10, 2), a3=(10, 3), b1=(10, 4))
    models = {"a": {"a1": 1, "a2": 2, "a3": 3}, "b": {"b1": 4}}
    assert select_evictions(b, models, {}, max_bytes=0) == ["a1"]
    assert select_evictions(b, models, {}, max_bytes=0, keep_per_model=1) == ["a1", "a2"]


def test_plans_follow_their_model_digest_and_pins_are_kept() -> None:
    b = blobs(m1=(10, 1), m2=(10, 2), m3=(10, 3), plan1=(5, 4), plan3=(5, 5), orphan=(1, 6))
    models = {"m": {"m1": 1, "m2": 2, "m3": 3}}
    plans = {"plan1": "m1", "plan3": "m3"}
    assert select_evictions(b, models, plans, max_bytes=0) == ["m1", "plan1", "orphan"]
    assert select_evictions(b, models, plans, max_bytes=0, pinned={"orphan"}) == ["m1", "plan1"]


# ---- eviction in the cache --------------------------------------------------------------------

def test_cache_keeps_the_last_two_digests_of_a_model(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path, max_bytes=2)  # one artifact fits; any two exceed the budget
    v1 = put(cache, b"v1", model="detector")
    v2 = put(cache, b"v2", model="detector")
    other = put(cache, b"o1", model="classifier")
    assert {e["sha256"] for e in cache.entries()} == {v1, v2, other}
    v3 = put(cache, b"v3", model="detector")
    assert {e["sha256"] for e in cache.entries()} == {v2, v3, other}
    assert not cache.path(v1).exists()
    cache.touch(v2, "detector")  # a rollback to v2 makes v3 the older of the two
    v4 = put(cache, b"v4", model="detector")
    assert {e["sha256"] for e in cache.entries()} == {v2, v4, other}


def test_a_plan_lives_under_its_key_is_never_replaced_and_goes_with_its_model(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path, max_bytes=12)
    v1 = put(cache, b"v1", model="m")
    key = plan_cache_key(v1, "8.7", "8.6.1", "fp16")
    with cache.writer() as w:
        w.write(b"plan build a")
        plan_a = cache.commit(w, sha256(b"plan build a"), plan_key=key, uploader="vision/pod-a")
    assert cache.resolve(key) == plan_a and cache.plan_uploader(key) == "vision/pod-a"
    with pytest.raises(PlanExists):
        put(cache, b"plan build b", plan_key=key)
    assert cache.resolve(key) == plan_a and cache.plan_uploader(key) == "vision/pod-a"
    assert list((tmp_path / "tmp").iterdir()) == []
    put(cache, b"v2", model="m")
    assert cache.resolve(key) == plan_a  # v1 is still one of the last two
    put(cache, b"v3", model="m")
    assert cache.resolve(key) is None and cache.resolve(v1) is None and cache.plan_uploader(key) is None


def test_a_plan_is_replaced_only_while_it_is_still_the_one_the_caller_judged(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    key = plan_cache_key(put(cache, b"v1", model="m"), "8.7", "8.6.1", "fp16")
    unattested = put(cache, b"plan kept before the node had a key", plan_key=key)
    with pytest.raises(PlanExists), cache.writer() as w:  # another plan took its place meanwhile: no swap
        w.write(b"fresh build")
        cache.commit(w, sha256(b"fresh build"), plan_key=key, replacing=sha256(b"some other plan"))
    assert cache.resolve(key) == unattested
    with cache.writer() as w:
        w.write(b"fresh build")
        fresh = cache.commit(w, sha256(b"fresh build"), plan_key=key, uploader="vision/pod-b", replacing=unattested)
    assert cache.resolve(key) == fresh and cache.plan_uploader(key) == "vision/pod-b"
    assert NodeCache(tmp_path).resolve(key) == fresh  # persisted


def test_bytes_in_flight_are_held_to_the_budget_and_given_back(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path, max_bytes=10)
    with cache.writer() as a, cache.writer() as b:
        a.write(b"123456")
        with pytest.raises(CacheFull, match="--max-cache-bytes"):
            b.write(b"12345")  # 11 bytes in flight
        b.write(b"1234")
        assert cache.in_flight_bytes() == 10
        b.reset()  # a restarted transfer gives its bytes back
        assert cache.in_flight_bytes() == 6
    assert cache.in_flight_bytes() == 0  # aborted writers give theirs back too
    put(cache, b"0123456789")
    assert cache.in_flight_bytes() == 0  # and so does a published one


def test_model_names_beyond_the_limit_lose_their_pins_oldest_first(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path, max_bytes=2, max_models=2)
    blobs = [put(cache, b"v%d" % i, model=f"made-up-{i}") for i in range(4)]
    assert {e["sha256"]: e["models"] for e in cache.entries()} == {
        blobs[2]: ["made-up-2"], blobs[3]: ["made-up-3"]}


def test_uses_are_kept_in_memory_until_a_flush(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    digest = put(cache, b"v1", model="m")
    index = tmp_path / "index.json"
    written = index.stat().st_ino
    for _ in range(10):
        cache.touch(digest, "m")
    assert index.stat().st_ino == written
    assert cache.flush() and index.stat().st_ino != written
    assert not cache.flush()  # nothing new to write
    assert NodeCache(tmp_path).entries()[0]["models"] == ["m"]


def test_commit_refuses_a_bad_plan_key(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path)
    with pytest.raises(ValueError), cache.writer() as w:
        w.write(b"x")
        cache.commit(w, sha256(b"x"), plan_key="plan-../../etc")
