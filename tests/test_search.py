import numpy as np
import pytest
from PIL import Image

from simlib.errors import SimlibError
from simlib.model import Embedder
from simlib.search import Searcher
from tests.support.galleries import model_config

pytestmark = pytest.mark.integration  # the index of real images built by a ResNet50 (``searcher``)


def test_a_gallery_image_finds_itself_first(searcher, small_table):
    hits = searcher.query(small_table.paths[5], k=3)
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].id == small_table.ids[5] and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].label == small_table.label(5) and hits[0].attributes == small_table.attrs(5)
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_exclude_self_and_filters(searcher, small_table):
    hits = searcher.query(small_table.paths[5], k=4, exclude_self=True)
    assert small_table.ids[5] not in [h.id for h in hits] and len(hits) == 4
    colour = small_table.attrs(5)["baseColour"]
    hits = searcher.query(small_table.paths[5], k=50, filters={"baseColour": colour})
    assert hits and all(h.attributes["baseColour"] == colour for h in hits)
    n = sum(1 for i in range(len(small_table)) if small_table.attrs(i)["baseColour"] == colour)
    assert len(hits) == n


def test_saved_and_reloaded_searcher_answers_identically(searcher, small_table, tmp_path):
    searcher.save(tmp_path / "copy")
    again = Searcher.load(tmp_path / "copy")
    for i in (0, 17, 40):
        a = searcher.query(small_table.paths[i], k=5)
        b = again.query(small_table.paths[i], k=5)
        assert [h.id for h in a] == [h.id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-6)


def test_query_accepts_pil_and_arrays(searcher, small_table):
    path = small_table.paths[9]
    ids = [h.id for h in searcher.query(path, k=3)]
    assert [h.id for h in searcher.query(Image.open(path), k=3)] == ids
    assert [h.id for h in searcher.query(np.asarray(Image.open(path)), k=3)] == ids


def test_an_index_built_by_another_model_is_refused(small_index_dir, tmp_path):

    other = Embedder.build(model_config(seed=7))
    other.save(tmp_path / "other")
    with pytest.raises(SimlibError, match="different model"):
        Searcher.load(small_index_dir, model_dir=tmp_path / "other")


def test_bad_query_is_a_clear_error(searcher, tmp_path):
    (tmp_path / "q.jpg").write_text("not an image")
    with pytest.raises(SimlibError, match="not an image"):
        searcher.query(tmp_path / "q.jpg")


def test_info_reports_what_a_status_line_needs(searcher, small_table):
    info = searcher.info()
    assert info.gallery_size == len(small_table) and info.backend == "faiss" and info.rebuilds_while_serving
    assert info.weights == "none" and info.trained is False and info.image_size == 32 and info.untrained
    assert info.threshold is None and info.calibration is None  # not calibrated
    assert info.to_dict()["gallery_size"] == len(small_table) and info.to_dict()["calibration"] is None


def test_fingerprint_is_read_back_not_recomputed(small_index_dir):
    """info() is called on every app query: the fingerprint is the one saved with the model."""
    from simlib.model import Embedder, fingerprint_of

    searcher = Searcher.load(small_index_dir)
    first = searcher.info().model_fingerprint
    e = searcher.embedder
    assert first == fingerprint_of(e.config, [*e.backbone.weights, *e.head.weights])
    assert first == searcher.index.manifest.model_fingerprint
    weights = e.head.get_weights()
    e.head.set_weights([w + 1.0 for w in weights])  # changed weights hash differently once assembled anew...
    assert Embedder.assemble(e.backbone, e.head, e.config).fingerprint != first
    assert searcher.info().model_fingerprint == first  # ...the searcher's embedder keeps the saved one
