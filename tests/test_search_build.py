"""Building a served gallery in the library: build_gallery, retrain_on_gallery, GalleryInfo, backend
capabilities and the model folder read without TensorFlow.

Fast tier: a tiny backbone over a synthetic labelled gallery (no ResNet50, no data folder).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simlib.config import ModelConfig
from simlib.data import load_image_folder
from simlib.errors import SimlibError
from simlib.index import BACKENDS, DEFAULT_BACKEND, VectorIndex
from simlib.model import Embedder, read_model_folder, saved_model
from simlib.search import GalleryInfo, Searcher, build_gallery
from tests.support.galleries import labelled_folder, synthetic_items

TINY = {"backbone": "tiny", "image_size": 32, "embedding_dim": 16, "weights": "none"}


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory) -> Path:
    """4 classes x 8 synthetic images, and one file that is not an image."""
    root = labelled_folder(tmp_path_factory.mktemp("gallery"), synthetic_items(4, 8))
    (root / "class0" / "broken.png").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def built(gallery_dir, tmp_path_factory):
    """The gallery built, calibrated and saved by build_gallery: (build, index folder, log lines)."""
    logged: list[str] = []
    index_dir = tmp_path_factory.mktemp("artifacts") / "index"
    build = build_gallery(
        Embedder.build(ModelConfig(**TINY)), load_image_folder(gallery_dir), index_dir=index_dir, log=logged.append
    )
    return build, index_dir, logged


def test_build_gallery_indexes_records_the_unreadable_calibrates_and_saves(built, gallery_dir):
    build, index_dir, logged = built
    broken = str((gallery_dir / "class0" / "broken.png").resolve())
    assert len(build.skipped) == 1 and len(build.searcher.index) == 32 and build.seconds > 0
    assert build.searcher.index.manifest.skipped_paths == (broken,)  # recorded by Searcher.from_table itself
    assert logged[0].startswith("skipped ") and "broken.png" in logged[0]
    calibrated = next(line for line in logged if line.startswith("calibrated the 'no good match' threshold: "))
    threshold = build.searcher.calibration
    assert threshold is not None and threshold.n_queries >= 5 and threshold.summary() in calibrated
    again = Searcher.load(index_dir)
    assert again.calibration == threshold and again.index.manifest.skipped_paths == (broken,)
    assert again.fingerprint == build.searcher.fingerprint


def test_info_is_one_typed_value(built):
    build, _, _ = built
    info = build.searcher.info()
    assert isinstance(info, GalleryInfo)
    assert (info.gallery_size, info.backend, info.index_kind, info.backbone) == (32, "faiss", "flat", "tiny")
    assert info.rebuilds_while_serving and info.untrained and not info.trained and info.embedding_dim == 16
    assert info.calibration == build.searcher.calibration and info.threshold == build.searcher.threshold
    as_dict = info.to_dict()
    assert as_dict["calibration"] == info.calibration.to_dict() and as_dict["rebuilds_while_serving"] is True


def test_backends_say_what_they_can_do():
    faiss, milvus = BACKENDS["faiss"], BACKENDS["milvus"]
    assert BACKENDS[DEFAULT_BACKEND] is VectorIndex
    assert not faiss.streams_build and not faiss.has_location and faiss.rebuilds_while_serving
    assert milvus.streams_build and milvus.has_location and not milvus.rebuilds_while_serving


def test_retrain_on_gallery_keeps_the_served_searcher_and_saves_the_new_model(built, tmp_path):
    from simlib.train import retrain_on_gallery

    build, _, _ = built
    served = build.searcher
    served_fingerprint, size = served.fingerprint, len(served.index)
    seen: list[tuple[float, str]] = []
    done = retrain_on_gallery(
        served,
        minutes=1.0,
        epochs=1,
        steps_per_epoch=2,
        require_better=False,
        model_dir=tmp_path / "model",
        index_dir=tmp_path / "index",
        progress=lambda fraction, text: seen.append((fraction, text)),
    )
    assert served.fingerprint == served_fingerprint and len(served.index) == size  # the served one is untouched
    assert done.searcher.embedder.config.trained and len(done.searcher.index) == size
    assert 0.0 <= done.before <= 1.0 and done.after == done.training.best_val_recall and done.seconds > 0
    saved = read_model_folder(tmp_path / "model")
    assert saved.trained and saved.fingerprint == done.searcher.fingerprint
    assert Searcher.load(tmp_path / "index").fingerprint == done.searcher.fingerprint
    assert seen[0][0] == 0.0 and seen[0][1].startswith("training on 32 labelled images")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".training")] == []


def test_retrain_refuses_an_index_that_cannot_be_rebuilt_while_served(built, tmp_path):
    from simlib.train import retrain_on_gallery

    index_dir = built[1]
    searcher = Searcher.load(index_dir)
    searcher.index.rebuilds_while_serving = False  # as a Milvus index says
    with pytest.raises(SimlibError, match="cannot be rebuilt while it is served"):
        retrain_on_gallery(searcher, model_dir=tmp_path / "model")


def test_a_model_folder_is_read_without_tensorflow(built, tmp_path):
    _, index_dir, _ = built
    model = read_model_folder(index_dir / "model")
    assert model.config.backbone == "tiny" and not model.trained and model.fingerprint
    assert saved_model(tmp_path) is None
    (tmp_path / "model.keras").write_text("")
    (tmp_path / "config.json").write_text('{"fingerprint": "x"}')
    with pytest.raises(SimlibError, match="is damaged"):
        read_model_folder(tmp_path)
    assert saved_model(tmp_path) is None
