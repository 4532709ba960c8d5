"""One conformance suite for every index backend: FAISS, Milvus Lite, and (marked) a real Milvus server.

The server runs only with ``make test-milvus`` (it starts PyPI's embedded ``milvus-server`` on
127.0.0.1) or against ``$SIMLIB_MILVUS_URI`` (any reachable server; ``$MILVUS_TOKEN`` if it needs one).
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from simlib.config import IndexConfig
from simlib.errors import SimlibError
from simlib.index import IndexBackend, Record, Threshold, VectorIndex, create_index, open_index
from simlib.index.milvus_schema import filter_expression, public_uri, quote
from tests.support import REPO
from tests.support.cli import run_cli
from tests.support.vectors import brute, stratified_rows, structured

D = 32
N = 300
INJECTION = 'x" or id > 0 or "'
RECALL_TOLERANCE = 0.95  # approximate kinds; exact ("flat") results must equal brute force up to ties
_names = itertools.count()


def records(n, start=0):
    colours = ["red", "green", "blue"]
    out = []
    for i in range(start, start + n):
        attrs = {"colour": colours[i % 3], "season": "summer" if i % 2 else "winter"}
        if i == start + 7:
            attrs["colour"] = INJECTION  # a crafted value must only ever match itself
        out.append(Record(id=1000 + i, path=f"/g/{i}.jpg", label=f"c{i % 4}", attributes=attrs))
    return out


# ----------------------------------------------------------------------------- backends
@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory):
    """A real Milvus server: $SIMLIB_MILVUS_URI, or the embedded standalone when SIMLIB_TEST_MILVUS_SERVER=1."""
    if os.environ.get("SIMLIB_MILVUS_URI"):
        yield os.environ["SIMLIB_MILVUS_URI"]
        return
    if os.environ.get("SIMLIB_TEST_MILVUS_SERVER") != "1":
        pytest.skip("real-server check: run `make test-milvus` (or set SIMLIB_MILVUS_URI)")
    from tests.support.milvus_server import local_server

    with local_server(tmp_path_factory.mktemp("milvus-server")) as uri:
        yield uri


@pytest.fixture(params=["faiss", "milvus-lite", pytest.param("milvus-server", marks=pytest.mark.milvus_server)])
def backend(request, tmp_path):
    """(backend name, uri or None) for creating indexes; Milvus indexes made by a test are closed after it."""
    if request.param == "faiss":
        yield "faiss", None
        return
    if request.param == "milvus-lite":
        yield "milvus", str(tmp_path / "gallery.db")
    else:
        yield "milvus", request.getfixturevalue("milvus_server_uri")


@pytest.fixture
def make_index(backend):
    """Build an index of the backend under test from vectors and records."""
    name, uri = backend
    made = []

    def make(x, recs, config=None) -> IndexBackend:
        config = config or IndexConfig(kind="flat")
        if name == "faiss":
            index = VectorIndex.build(x, recs, config)
        else:
            attrs = sorted({k for r in recs for k in r.attributes})
            index = create_index(
                "milvus", x.shape[1], config, attributes=attrs, uri=uri, collection=f"t{os.getpid()}_{next(_names)}"
            )
            for start in range(0, len(x), 128):  # in chunks, as the embedding pipeline streams them
                index.add(x[start : start + 128], recs[start : start + 128])
            index.settle()  # end of a bulk load: flush, wait for the index build
        made.append(index)
        return index

    yield make
    for index in made:
        if index.backend == "milvus" and uri.startswith("http"):
            index.drop()
        index.close()


# ----------------------------------------------------------------------------- expressions (no backend)
def test_filter_values_are_quoted_so_they_cannot_change_the_expression():
    fields = {"label": "label", "colour": "attr_colour"}
    assert quote(INJECTION) == r'"x\" or id > 0 or \""'
    assert quote("a\\b\n") == r'"a\\b\n"'
    assert filter_expression({"colour": [INJECTION, "red"]}, fields) == (
        r'attr_colour in ["x\" or id > 0 or \"", "red"]'
    )
    assert filter_expression({"label": "c1", "colour": []}, fields) == 'label in ["c1"]'
    assert filter_expression({}, fields) is None
    assert filter_expression({"id > 0 or colour": "x"}, fields) == "id < 0"  # names never reach the expression
    with pytest.raises(SimlibError, match="control characters"):
        quote("a\x00b")


def test_manifest_uris_carry_no_secrets(tmp_path):
    assert public_uri("http://127.0.0.1:19530") == "http://127.0.0.1:19530"
    assert public_uri(str(tmp_path / "g.db")) == str(tmp_path / "g.db")
    with pytest.raises(SimlibError, match="MILVUS_TOKEN"):
        public_uri("http://root:secret@milvus.example:19530")
    with pytest.raises(SimlibError, match=r"\.db"):
        public_uri(str(tmp_path / "gallery"))


# ----------------------------------------------------------------------------- conformance
def test_exact_top_k_equals_brute_force(make_index):
    x, q = structured(N), structured(12, seed=1)
    index = make_index(x, records(N))
    assert isinstance(index, IndexBackend) and len(index) == N and index.dim == D
    scores, ids = index.search(q, 10)
    want_s, want_i = brute(x, q, 10)
    np.testing.assert_allclose(scores, want_s, atol=1e-4)
    assert (ids == want_i + 1000).mean() > 0.99  # ties may swap
    assert index.kind == "flat"


def test_approximate_index_reaches_the_stated_recall(make_index):
    x, q = structured(800), structured(20, seed=2)
    index = make_index(x, records(800), IndexConfig(kind="hnsw", hnsw_m=16))
    _, ids = index.search(q, 10)
    _, want = brute(x, q, 10)
    recall = np.mean([len(set(a) & set(b + 1000)) / 10 for a, b in zip(ids, want, strict=True)])
    assert index.kind == "hnsw" and recall >= RECALL_TOLERANCE, recall


def test_filters_apply_inside_the_search_and_cannot_be_injected(make_index):
    x, q = structured(N), structured(6, seed=3)
    recs = records(N)
    index = make_index(x, recs)
    allowed = np.array([r.attributes["colour"] in ("blue", "red") and r.label == "c1" for r in recs])
    scores, ids = index.search(q, 10, filters={"colour": ["blue", "red"], "label": "c1"})
    want_s, _ = brute(x, q, 10, allowed)
    np.testing.assert_allclose(scores, want_s, atol=1e-4)
    assert set(ids.ravel()) <= {1000 + int(i) for i in np.flatnonzero(allowed)}
    # the crafted value matches exactly its own record, never "everything"
    _, ids = index.search(q, 5, filters={"colour": INJECTION})
    assert (ids[:, 0] == 1007).all() and (ids[:, 1:] == -1).all()
    # an unknown attribute matches nothing; an empty value list filters nothing
    scores, ids = index.search(q, 3, filters={"material": "silk"})
    assert (ids == -1).all() and np.isneginf(scores).all()
    assert (index.search(q, 3, filters={"colour": []})[1] >= 0).all()


def test_delete_add_and_records(make_index):
    x = structured(N)
    recs = records(N)
    index = make_index(x[:200], recs[:200])
    assert index.remove([1000, 1001, 1002, 999_999]) == 3 and len(index) == 197
    assert 1000 not in index and 1003 in index
    _, ids = index.search(x[:3], 5)
    assert not {1000, 1001, 1002} & set(ids.ravel().tolist())
    with pytest.raises(SimlibError):
        index.record(1000)
    with pytest.raises(SimlibError, match="already in the index"):
        index.add(x[5:6], [recs[5]])
    index.add(x[200:], recs[200:])
    assert len(index) == N - 3
    _, ids = index.search(x[250:251], 1)
    assert ids[0, 0] == 1250
    assert index.record(1250) == recs[250]
    np.testing.assert_allclose(index.vectors_of([1250, 1003]), x[[250, 3]], atol=1e-5)
    assert sorted(r.id for r in index.records()) == [r.id for r in recs[3:]]
    reference = VectorIndex.build(x[3:], recs[3:], IndexConfig(kind="flat"))
    assert index.attribute_values() == reference.attribute_values()


def test_manifest_and_path_lookups_survive_a_reopen(make_index, tmp_path):
    index = make_index(structured(60), records(60))
    index.settle()  # nothing pending: a no-op on every backend
    assert index.ids_with_path("/g/5.jpg") == [1005] and index.ids_with_path("/g/none.jpg") == []
    threshold = Threshold(score=0.5, method="test", n_queries=3)
    index.manifest = index.manifest.replace(threshold=threshold, next_id=2000, skipped_paths=("/g/x.jpg",), data="g")
    index.save(tmp_path / "index")
    index.close()
    again = open_index(tmp_path / "index")
    try:
        m = again.manifest
        assert (m.backend, m.dimension, m.count, m.kind, m.format_version) == (again.backend, D, 60, "flat", 2)
        assert (m.threshold, m.next_id, m.skipped_paths, m.data) == (threshold, 2000, ("/g/x.jpg",), "g")
        assert again.ids_with_path("/g/5.jpg") == [1005]
        assert sorted(again.ids.tolist()) == [r.id for r in records(60)]
    finally:
        again.close()


def test_reopened_in_a_new_process_answers_identically(make_index, tmp_path):
    x, q = structured(N), structured(5, seed=4)
    index = make_index(x, records(N))
    want_s, want_i = index.search(q, 5, filters={"season": "summer"})
    index.manifest = index.manifest.replace(model_fingerprint="abc")
    index.save(tmp_path / "index")
    index.close()  # Milvus Lite: one process at a time
    np.save(tmp_path / "q.npy", q)
    code = (
        "import json, sys, numpy as np\n"
        "from simlib.index import open_index\n"
        f"index = open_index({str(tmp_path / 'index')!r})\n"
        f"s, i = index.search(np.load({str(tmp_path / 'q.npy')!r}), 5, filters={{'season': 'summer'}})\n"
        "print(json.dumps({'n': len(index), 'backend': index.backend, 'fp': index.manifest.model_fingerprint,"
        " 'ids': i.tolist(), 'scores': s.tolist()}))\n"
        "index.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["n"] == N and got["backend"] == index.backend and got["fp"] == "abc"
    assert got["ids"] == want_i.tolist()
    np.testing.assert_allclose(got["scores"], want_s, atol=1e-5)
    again = open_index(tmp_path / "index" / "manifest.json")
    try:
        assert again.search(q, 5, filters={"season": "summer"})[1].tolist() == want_i.tolist()
    finally:
        again.close()


def test_an_index_built_by_another_model_is_refused(make_index, tiny_model, tmp_path):

    from simlib.search import Searcher

    index = make_index(structured(50), records(50))
    index.manifest = index.manifest.replace(model_fingerprint=tiny_model.fingerprint, model_dir="model")
    index.save(tmp_path / "index", write_extra=lambda tmp: tiny_model.save(tmp / "model"))
    index.manifest = index.manifest.replace(model_fingerprint="another-model")
    with pytest.raises(SimlibError, match="different model"):
        Searcher(tiny_model, index)
    index.close()
    searcher = Searcher.load(tmp_path / "index")  # its own model: accepted
    assert searcher.info().gallery_size == 50
    searcher.close()


# ----------------------------------------------------------------------------- end to end on real images
@pytest.mark.parametrize("backend", ["milvus-lite"], indirect=True)
def test_searcher_streams_a_gallery_into_milvus_and_agrees_with_faiss(backend, tiny_model, small_table):
    from simlib.search import Searcher

    _, uri = backend
    faiss_searcher, _ = Searcher.from_table(tiny_model, small_table, progress=False)
    searcher, result = Searcher.from_table(
        tiny_model, small_table, progress=False, backend="milvus", uri=uri, batch_size=8
    )
    try:
        assert len(result.rows) == len(small_table) and searcher.info().backend == "milvus"
        for i in (0, 11, 30):
            a = faiss_searcher.query(small_table.paths[i], k=5, exclude_self=True)
            b = searcher.query(small_table.paths[i], k=5, exclude_self=True)
            assert [h.id for h in a] == [h.id for h in b]
            assert [h.attributes for h in a] == [h.attributes for h in b]
            assert small_table.ids[i] not in [h.id for h in b]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
        colour = small_table.attrs(5)["baseColour"]
        hits = searcher.query(small_table.paths[5], k=50, filters={"baseColour": colour})
        assert hits and all(h.attributes["baseColour"] == colour for h in hits)
        assert searcher.index.attribute_values() == faiss_searcher.index.attribute_values()
        # the demo app serves it through the same interface (`app_gradio.py --index DIR`)
        sys.path.insert(0, str(REPO))
        app = importlib.import_module("app_gradio")
        assert app.build_parser().parse_args(["--index", "i", "--uri", uri]).uri == uri
        from simlib.app import GalleryService

        served, reference = GalleryService(searcher), GalleryService(faiss_searcher)
        for i in (3, 20):
            got = served.search(small_table.paths[i], 6, {"baseColour": [colour]})
            want = reference.search(small_table.paths[i], 6, {"baseColour": [colour]})
            assert [h.id for h in got.hits] == [h.id for h in want.hits]
    finally:
        searcher.close()


@pytest.mark.slow  # three CLI commands, each building or loading a ResNet50
def test_cli_indexes_into_milvus_lite_and_searches_it(tmp_path, product_table):
    rows = stratified_rows(product_table.labels, 4, 5)
    gallery = tmp_path / "images"
    for r in rows:
        folder = gallery / str(product_table.label(int(r)))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{product_table.ids[r]}.jpg").symlink_to(product_table.paths[r])
    model_args = ["--weights", "none", "--image-size", "32", "--embedding-dim", str(D)]
    out = run_cli(
        "index", "--data", str(gallery), "--out", str(tmp_path / "idx"), "--backend", "milvus",
        "--uri", str(tmp_path / "gallery.db"), "--quiet", *model_args,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "milvus" in out.stdout and "indexed 20 images" in out.stdout
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["backend"] == "milvus" and manifest["uri"] == str(tmp_path / "gallery.db")
    query = str(next(gallery.rglob("*.jpg")))
    out = run_cli("search", query, "--index", str(tmp_path / "idx"), "--backend", "milvus", "-k", "5", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    hits = json.loads(out.stdout)["hits"]
    assert len(hits) == 5 and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # the same model (the index's own) over FAISS gives the same top-5
    from simlib.data import load_dataset
    from simlib.model import Embedder
    from simlib.search import Searcher

    model = Embedder.load(tmp_path / "idx" / "model")
    faiss_searcher, _ = Searcher.from_table(model, load_dataset(str(gallery)), progress=False)
    assert [h.path for h in faiss_searcher.query(query, k=5)] == [h["path"] for h in hits]
    out = run_cli("search", query, "--index", str(tmp_path / "idx"), "--backend", "faiss")
    assert out.returncode == 1 and "milvus" in out.stderr
