"""simlib.search.gallery: the served index is built once, cached, reloaded, and rebuilt only when asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simlib.errors import SimlibError
from tests.support.galleries import labelled_folder, table_items

pytestmark = pytest.mark.integration  # real images through a ResNet50


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory, product_table) -> Path:
    """A labelled image folder (2 classes x 4 real product photos, as symlinks)."""
    rows = [r for label in ("Watches", "Sandals") for r in np.flatnonzero(product_table.labels == label)[:4]]
    return labelled_folder(tmp_path_factory.mktemp("gallery"), table_items(product_table, rows), link=True)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, gallery_dir) -> tuple[Path, list[str], str]:
    """An artifacts folder after a first start: (folder, log lines, note)."""
    from simlib.search.gallery import open_gallery

    folder = tmp_path_factory.mktemp("app") / "artifacts"
    logged: list[str] = []
    _, note = open_gallery(
        folder, data=str(gallery_dir), weights="none", image_size=32, progress=False, log=logged.append
    )
    return folder, logged, note


def test_first_start_builds_and_caches_second_loads(artifacts, gallery_dir):
    from simlib.search import Searcher
    from simlib.search.gallery import gallery_folders, index_dir_in, open_gallery

    folder, logged, note = artifacts
    assert note.startswith("indexed 8 images") and "no index" in logged[0]
    # 8 images are too few to calibrate "no good match" (2 validation queries): said, not fatal.
    assert any(line.startswith("no 'no good match' threshold: only 2 validation") for line in logged), logged
    assert (folder / "index" / "manifest.json").is_file() and index_dir_in(folder) == folder / "index"
    assert index_dir_in(folder / "index") == folder / "index"  # an index folder given directly
    cached = Searcher.load(folder / "index")
    query = cached.index.records()[0].path
    expected = [(h.id, round(h.score, 5)) for h in cached.query(query, k=3)]
    # Nothing to rebuild, with or without --data naming the same images.
    for data in (None, str(gallery_dir)):
        again, note = open_gallery(folder, data=data, progress=False, log=logged.append)
        assert note.startswith("loaded") and "run `simlib calibrate" in note, note
        assert [(h.id, round(h.score, 5)) for h in again.query(query, k=3)] == expected
    # Only the images' own folder is served: resolved through the symlinks, never the gallery root above.
    assert gallery_folders(cached.index) == [Path(query).parent]


def test_rebuilds_only_for_another_model(artifacts, tmp_path, tiny_model):
    from simlib.search.gallery import open_gallery

    folder = artifacts[0]
    # --model: re-indexes the same gallery with that model once, then loads it.
    tiny_model.save(tmp_path / "trained")
    searcher, note = open_gallery(folder, model_dir=tmp_path / "trained", progress=False, log=print)
    assert note.startswith("indexed 8 images")
    assert searcher.index.manifest.model_fingerprint == tiny_model.fingerprint
    _, note = open_gallery(folder, model_dir=tmp_path / "trained", image_size=32, progress=False, log=print)
    assert note.startswith("loaded")
    with pytest.raises(SimlibError, match="conflicts with the model"):
        open_gallery(folder, model_dir=tmp_path / "trained", image_size=64, log=print)
    # Another --image-size than the cached model's: a fresh model and a new index.
    bigger, note = open_gallery(folder, image_size=40, progress=False, log=print)
    assert note.startswith("indexed 8 images") and bigger.embedder.image_size == 40


def test_index_table_and_examples(small_index_dir, small_table):
    from simlib.index import VectorIndex
    from simlib.search import index_table
    from simlib.search.gallery import example_images

    index = VectorIndex.load(small_index_dir)
    table = index_table(index)
    assert len(table) == len(small_table) and set(table.labels) == set(small_table.labels)
    assert table.attributes[0] == index.records()[0].attributes
    examples = example_images(index, n=5)
    labels = {r.path: r.label for r in index.records()}
    assert len(examples) == 5 and len({labels[p] for p in examples}) == 5


def test_a_labelled_gallery_is_calibrated_when_indexed(tmp_path, product_table):
    """open_gallery calibrates "no good match" on a labelled gallery and saves it with the index."""
    from simlib.index import VectorIndex
    from simlib.search.gallery import open_gallery

    rows = [
        r for label in ("Watches", "Sandals", "Tshirts") for r in np.flatnonzero(product_table.labels == label)[:10]
    ]
    gallery = labelled_folder(tmp_path / "gallery", table_items(product_table, rows), link=True)
    logged: list[str] = []
    searcher, _ = open_gallery(
        tmp_path / "artifacts", data=str(gallery), weights="none", image_size=32, progress=False, log=logged.append
    )
    line = next(ln for ln in logged if ln.startswith("calibrated the 'no good match' threshold"))
    saved = VectorIndex.load(tmp_path / "artifacts" / "index").manifest.threshold
    assert saved.n_queries == 6 and saved.method == "top-1 same-class precision"  # 20 % of 3 x 10
    assert searcher.threshold == saved.score and f"{saved.score:.4f}" in line
    again, note = open_gallery(tmp_path / "artifacts", progress=False, log=logged.append)
    assert note.startswith("loaded") and "calibrate" not in note and again.threshold == saved.score


def test_a_milvus_lite_gallery_is_built_cached_and_served(tmp_path, gallery_dir):
    """open_gallery serves either backend: built into Milvus Lite, reloaded from it, rebuilt into FAISS on request."""
    from simlib.search import index_table, open_gallery

    folder, db = tmp_path / "artifacts", str(tmp_path / "gallery.db")
    logged: list[str] = []
    searcher, note = open_gallery(
        folder, data=str(gallery_dir), weights="none", image_size=32, progress=False, log=logged.append,
        backend="milvus", uri=db,
    )  # fmt: skip
    try:
        assert note.startswith("indexed 8 images") and searcher.info().backend == "milvus"
        assert any("only 2 validation" in line for line in logged), logged  # calibration ran on Milvus records
        table = index_table(searcher.index)
        assert len(table) == 8 and set(table.labels) == {"Watches", "Sandals"}
        query = searcher.index.records()[0].path
        expected = searcher.query(query, k=3)
    finally:
        searcher.close()  # Milvus Lite releases its file
    again, note = open_gallery(folder, progress=False, log=logged.append)
    try:
        assert note.startswith("loaded") and again.index.backend == "milvus" and again.index.manifest.uri == db
        assert [h.id for h in again.query(query, k=3)] == [h.id for h in expected]
    finally:
        again.close()
    # another backend asked for: the same images, re-indexed with the same model
    faiss_searcher, note = open_gallery(folder, backend="faiss", progress=False, log=logged.append)
    assert note.startswith("indexed 8 images") and faiss_searcher.index.backend == "faiss"
    hits = faiss_searcher.query(query, k=3)
    assert [h.id for h in hits] == [h.id for h in expected]
    np.testing.assert_allclose([h.score for h in hits], [h.score for h in expected], atol=1e-4)
