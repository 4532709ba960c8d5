import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simlib.config import IndexConfig, ModelConfig
from simlib.errors import SimlibError
from simlib.index import (
    FORMAT_VERSION,
    IndexManifest,
    Record,
    Threshold,
    VectorIndex,
    open_index,
    resolve_kind,
)
from simlib.index.faiss import BLAS_THRESHOLD, import_faiss
from tests.support import REPO
from tests.support.vectors import brute, structured


def records(n, start=0):
    colours = ["red", "green", "blue"]
    return [
        Record(id=1000 + i, path=f"/g/{i}.jpg", label=f"c{i % 4}", attributes={"colour": colours[i % 3]})
        for i in range(start, start + n)
    ]


def test_exact_index_equals_brute_force():
    x = structured(500)
    q = structured(40, seed=1)
    index = VectorIndex.build(x, records(500), IndexConfig(kind="flat"))
    # 40 queries take FAISS's BLAS path (simlib lowers its threshold to 20), 5 its per-query scan.
    assert import_faiss().cvar.distance_compute_blas_threshold <= BLAS_THRESHOLD < 40
    for batch in (q, q[:5]):
        scores, ids = index.search(batch, 10)
        want_s, want_i = brute(x, batch, 10)
        np.testing.assert_allclose(scores, want_s, atol=1e-5)
        assert (ids == want_i + 1000).mean() > 0.99  # ties may swap


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_kinds_reach_high_recall(kind):
    x = structured(4000)
    q = structured(50, seed=2)
    index = VectorIndex.build(x, records(4000), IndexConfig(kind=kind, ivf_nprobe=16))
    _, ids = index.search(q, 10)
    _, want = brute(x, q, 10)
    recall = np.mean([len(set(a) & set(b + 1000)) / 10 for a, b in zip(ids, want, strict=True)])
    assert recall >= 0.9, recall


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_filters_apply_inside_the_search(kind):
    x = structured(3000)
    q = structured(10, seed=3)
    recs = records(3000)
    index = VectorIndex.build(x, recs, IndexConfig(kind=kind))
    allowed = np.array([r.attributes["colour"] == "blue" and r.label in ("c0", "c1") for r in recs])
    scores, ids = index.search(q, 5, filters={"colour": "blue", "label": ["c0", "c1"]})
    assert (ids >= 0).all(), "a filtered top-K must still be full (not cut to K first)"
    for row in ids:
        for i in row:
            r = index.record(i)
            assert r.attributes["colour"] == "blue" and r.label in ("c0", "c1")
    want_s, _ = brute(x, q, 5, allowed)
    if kind == "flat":
        np.testing.assert_allclose(scores, want_s, atol=1e-5)


def test_filter_matching_nothing_returns_padding():
    index = VectorIndex.build(structured(50), records(50), IndexConfig(kind="flat"))
    scores, ids = index.search(structured(2, seed=1), 3, filters={"colour": "purple"})
    assert (ids == -1).all() and np.isneginf(scores).all()
    scores, ids = index.search(structured(1, seed=1), 80)  # k above the gallery size
    assert (ids[0, :50] >= 0).all() and (ids[0, 50:] == -1).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_remove_add_and_save_load_round_trip(tmp_path, kind):
    x = structured(300)
    q = structured(5, seed=4)
    index = VectorIndex.build(x[:200], records(200), IndexConfig(kind=kind))
    index.add(x[200:], records(100, start=200))
    assert index.remove([1000, 1001, 99999]) == 2
    assert 1000 not in index and len(index) == 298
    before = index.search(q, 10)
    assert not np.isin([1000, 1001], before[1]).any()
    index.save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx")
    after = loaded.search(q, 10)  # query the reloaded index, not the original
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    assert loaded.record(1299) == Record(1299, "/g/299.jpg", "c3", {"colour": "blue"})
    assert loaded.manifest.count == 298 and loaded.manifest.kind == kind and loaded.manifest.backend == "faiss"
    loaded.add(structured(1, seed=9), [Record(5, "/g/new.jpg")])
    loaded.save(tmp_path / "idx")
    assert len(VectorIndex.load(tmp_path / "idx")) == 299


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_mmap_load_searches_the_same_and_refuses_adding(tmp_path, kind):
    x = structured(2000, d=64)
    q = structured(30, d=64, seed=5)
    VectorIndex.build(x, records(2000), IndexConfig(kind=kind)).save(tmp_path / "idx")
    read, mapped = VectorIndex.load(tmp_path / "idx"), VectorIndex.load(tmp_path / "idx", mmap=True)
    assert mapped.mapped and not read.mapped
    for a, b in zip(mapped.search(q, 10), read.search(q, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(SimlibError, match="memory-mapped"):  # FAISS itself would abort the process
        mapped.add(structured(1, d=64, seed=9), [Record(5)])
    # Removing works (tombstones; compaction rebuilds in memory) and the result saves and reloads.
    assert mapped.remove(list(range(1000, 1700))) == 700 and not mapped.mapped
    mapped.save(tmp_path / "idx2")
    assert len(VectorIndex.load(tmp_path / "idx2", mmap=True)) == 1300


# Process-private memory (RssAnon) taken by loading an index; mapped file pages are not in it.
LOAD_RSS = """
import sys
from simlib.index import VectorIndex
from simlib.index.faiss import import_faiss

def anon_mib():
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024

import_faiss()
before = anon_mib()
index = VectorIndex.load(sys.argv[1], mmap=sys.argv[2] == "mmap")
index.search(index.vectors(index._alive.nonzero()[0][:5]), 3)
print(anon_mib() - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the process's resident memory")
def test_mmap_load_keeps_the_vectors_out_of_process_memory(tmp_path):
    x = np.tile(structured(1000, d=128), (128, 1))  # 128,000 vectors: 62.5 MiB of float32
    VectorIndex.build(x, records(len(x)), IndexConfig(kind="flat")).save(tmp_path / "idx")
    # A fresh process per mode: memory this one freed would be reused and hide the difference.
    grew = {
        mode: float(
            subprocess.run(
                [sys.executable, "-c", LOAD_RSS, str(tmp_path / "idx"), mode],
                capture_output=True, text=True, check=True, cwd=REPO,
            ).stdout
        )
        for mode in ("read", "mmap")
    }  # fmt: skip
    assert grew["read"] - grew["mmap"] > 50, grew


def test_many_removals_compact_the_index():
    index = VectorIndex.build(structured(100), records(100), IndexConfig(kind="hnsw"))
    index.remove(range(1000, 1040))
    assert index._index.ntotal == 60 and len(index) == 60
    assert not np.isin(np.arange(1000, 1040), index.search(structured(3, seed=5), 60)[1]).any()


def test_bad_inputs_give_clear_errors(tmp_path):
    index = VectorIndex.build(structured(10), records(10), IndexConfig(kind="flat"))
    with pytest.raises(SimlibError, match="already in the index"):
        index.add(structured(1), [Record(1000)])
    with pytest.raises(SimlibError, match="do not fit"):
        index.search(np.zeros((1, 7), np.float32), 3)
    with pytest.raises(SimlibError, match="NaN"):
        index.search(np.full((1, 32), np.nan, np.float32), 3)
    with pytest.raises(SimlibError, match="at least 1,000"):
        VectorIndex.build(structured(10), records(10), IndexConfig(kind="ivfpq"))
    with pytest.raises(SimlibError, match="does not exist"):
        VectorIndex.load(tmp_path / "missing")
    index.save(tmp_path / "idx")
    (tmp_path / "idx" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(SimlibError, match="corrupt"):
        VectorIndex.load(tmp_path / "idx")


def test_auto_kind_by_size():
    assert resolve_kind("auto", 5000) == "flat"
    assert resolve_kind("auto", 2_000_000) == "hnsw"
    assert resolve_kind("ivfpq", 10) == "ivfpq"


def test_attribute_values_for_filter_menus():
    index = VectorIndex.build(structured(12), records(12), IndexConfig(kind="flat"))
    values = index.attribute_values()
    assert values == {"colour": ["blue", "green", "red"], "label": ["c0", "c1", "c2", "c3"]}


def test_unfiltered_search_skips_removed_rows_and_empty_string_filters_still_filter():
    x = structured(40)
    recs = records(40)
    recs[3] = Record(id=recs[3].id, attributes={"colour": ""})
    index = VectorIndex.build(x, recs, IndexConfig(kind="flat"))
    index.remove([1000, 1001])
    _, ids = index.search(x[:2], 5)
    assert 1000 not in ids and 1001 not in ids
    _, ids = index.search(x[:1], 5, filters={"colour": ""})
    assert ids[0, 0] == 1003 and (ids[0, 1:] == -1).all()
    _, ids = index.search(x[:1], 5, filters={"colour": []})  # an empty list filters nothing
    assert (ids[0] >= 0).all()


def test_ivfpq_fits_its_code_size_to_the_dimension():
    x = structured(2000, d=24)  # the default 32 sub-quantisers do not divide 24: 24 are used
    index = VectorIndex.build(x, records(2000), IndexConfig(kind="ivfpq"))
    faiss = import_faiss()
    assert faiss.downcast_index(faiss.extract_index_ivf(index._index)).pq.M == 24
    assert index.search(x[:3], 1)[1][:, 0].tolist() == [1000, 1001, 1002]


def test_caches_follow_the_rows_after_compaction_and_adds():
    x = structured(40)
    index = VectorIndex.build(x, records(40), IndexConfig(kind="flat"))
    assert index.search(x[:1], 40, filters={"colour": "red"})[1][0, 0] == 1000  # fills the column cache
    assert index.ids_with_path("/g/3.jpg") == [1003]
    index.remove(range(1000, 1020))  # compacts: 20 rows left
    fresh = [Record(2000 + i, f"/h/{i}.jpg", "c9", {"colour": "purple"}) for i in range(20)]
    index.add(structured(20, seed=7), fresh)  # 40 rows again, other contents
    _, ids = index.search(x[:1], 40, filters={"colour": "purple"})
    assert set(ids[0][ids[0] >= 0].tolist()) == {r.id for r in fresh}
    assert index.ids_with_path("/g/3.jpg") == [] and index.ids_with_path("/h/3.jpg") == [2003]
    index.remove([2003])
    assert index.ids_with_path("/h/3.jpg") == []


# ----------------------------------------------------------------------------- the manifest
def full_manifest() -> IndexManifest:
    return IndexManifest(
        backend="milvus",
        dimension=16,
        kind="hnsw",
        count=3,
        index_config=IndexConfig(kind="hnsw", hnsw_m=8),
        metric="cosine",
        data="gallery",
        next_id=7,
        skipped_paths=("/g/broken.jpg",),
        threshold=Threshold(score=0.4, method="near-copy score percentile", n_queries=9, percentile=5.0),
        model_fingerprint="abc",
        model_config=ModelConfig(image_size=32, embedding_dim=16),
        uri="/tmp/g.db",
        collection="c",
        attribute_fields={"label": "label", "colour": "attr_colour"},
        ivf_nlist=8,
        milvus_index_type="HNSW",
        saved_at="2025-01-01T00:00:00+00:00",
        pymilvus_version="3.0",
        extra={"added_by_a_newer_simlib": [1, 2]},
    )


def test_manifest_round_trips_through_json():
    m = full_manifest()
    assert IndexManifest.from_json(m.to_json()) == m
    data = json.loads(m.to_json())
    assert data["format"] == "simlib-index" and data["format_version"] == FORMAT_VERSION
    assert data["added_by_a_newer_simlib"] == [1, 2]  # unknown keys are kept, at the top level
    assert data["threshold"] == {
        "score": 0.4, "method": "near-copy score percentile", "n_queries": 9, "seed": 0, "val": None,
        "percentile": 5.0, "precision": None, "reached": True, "calibrated_at": None,
    }  # fmt: skip
    bare = IndexManifest(dimension=8, count=0)
    assert IndexManifest.from_dict(bare.to_dict()) == bare
    assert "uri" not in bare.to_dict() and "threshold" not in bare.to_dict()  # unset fields are left out
    assert m.replace(next_id=9).next_id == 9 and m.next_id == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.next_id = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("count"), "damaged"),
        (lambda d: d.update(dimension="wide"), "damaged"),
        (lambda d: d.update(threshold={"method": "no score"}), "damaged"),
        (lambda d: d.update(format="other"), "not a simlib index"),
        (lambda d: d.update(format_version=FORMAT_VERSION + 1), "newer simlib"),
    ],
)
def test_a_bad_manifest_gives_a_clear_error(edit, message):
    data = full_manifest().to_dict()
    edit(data)
    with pytest.raises(SimlibError, match=message):
        IndexManifest.from_dict(data, "idx")


DATA = Path(__file__).parent / "data"


def test_version_1_manifests_are_read_with_every_field():
    faiss_v1 = IndexManifest.from_json((DATA / "legacy_index_v1" / "manifest.json").read_text())
    assert faiss_v1.format_version == 1 and faiss_v1.backend == "faiss" and faiss_v1.extra == {}
    assert (faiss_v1.dimension, faiss_v1.count, faiss_v1.kind) == (16, 20, "flat")
    assert faiss_v1.next_id == 121 and faiss_v1.skipped_paths == ("/gallery/shirts/broken.jpg",)
    assert faiss_v1.threshold == Threshold(
        score=0.5, method="top-1 same-class precision", n_queries=4, seed=0, val=0.2, target=0.9,
        precision=1.0, reached=True, calibrated_at="2025-01-01T00:00:00+00:00",
    )  # fmt: skip
    assert faiss_v1.model_fingerprint == "0123456789abcdef" and faiss_v1.model_dir == "model"
    assert faiss_v1.model_config == ModelConfig(image_size=32, embedding_dim=16) and faiss_v1.data == "legacy gallery"
    milvus_v1 = IndexManifest.from_json((DATA / "legacy_milvus_manifest_v1.json").read_text())
    assert milvus_v1.backend == "milvus" and milvus_v1.collection == "legacy" and milvus_v1.ivf_nlist == 8
    assert milvus_v1.attribute_fields == {"colour": "attr_colour", "label": "label"}
    assert milvus_v1.milvus_index_type == "IVF_FLAT" and milvus_v1.uri.endswith("gallery.db")
    assert milvus_v1.threshold is None and milvus_v1.skipped_paths == () and milvus_v1.extra == {}
    # nothing a version-1 file says is lost when it is written again
    for path in (DATA / "legacy_index_v1" / "manifest.json", DATA / "legacy_milvus_manifest_v1.json"):
        old = json.loads(path.read_text())
        new = IndexManifest.from_dict(old).to_dict()
        if "model_config" in old:  # later ModelConfig fields are written with their defaults, old ones unchanged
            added = {k: v for k, v in new["model_config"].items() if k not in old["model_config"]}
            assert added == {"grid_size": 4, "feature_stage": 0, "head_pca": 0}
            old = {**old, "model_config": {**old["model_config"], **added}}
        assert new == {"skipped_paths": [], **old}  # an empty list is written where version 1 wrote none
    # a bare VectorIndex.save of version 1 wrote no backend, model directory or next id
    old = json.loads((DATA / "legacy_index_v1" / "manifest.json").read_text())
    bare = IndexManifest.from_dict({k: v for k, v in old.items() if k not in ("backend", "model_dir", "next_id")})
    assert (bare.backend, bare.model_dir, bare.next_id) == ("faiss", "model", 0)


def test_a_version_1_folder_loads_and_answers_the_same(tmp_path):
    """An index folder written by simlib 0662bd3 (tests/data/legacy_index_v1/generate.py)."""
    expected = json.loads((DATA / "legacy_index_v1" / "expected.json").read_text())
    folder = tmp_path / "legacy"
    shutil.copytree(DATA / "legacy_index_v1", folder)
    index = open_index(folder)
    assert isinstance(index, VectorIndex) and len(index) == 20 and 120 not in index
    assert index.manifest.next_id == 121 and index.manifest.threshold.score == 0.5
    q = np.asarray(expected["queries"], np.float32)
    for name, filters in (("plain", None), ("filtered", expected["filters"])):
        scores, ids = index.search(q, expected["k"], filters)
        assert ids.tolist() == expected[name]["ids"], name
        np.testing.assert_allclose(scores, expected[name]["scores"], atol=1e-6)
    assert index.record(105) == Record(105, "/gallery/shoes/5.jpg", "shoes", {"colour": "blue", "season": "summer"})
    # saved again by this version: format 2, the same answers and every field kept
    before = index.manifest
    index.save(folder)
    again = open_index(folder)
    assert again.manifest.format_version == FORMAT_VERSION
    assert again.manifest.replace(saved_at=None, format_version=1) == before.replace(saved_at=None)
    assert again.search(q, expected["k"])[1].tolist() == expected["plain"]["ids"]
