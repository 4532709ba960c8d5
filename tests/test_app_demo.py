"""What a first-time visitor meets, without a server: which model the app serves and why, the honest
"no good match", and training a model on the gallery from the app.

Fast tier: a tiny backbone over a synthetic labelled gallery (no ResNet50, no data folder, no Gradio server).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from simlib.app import GalleryService
from simlib.errors import SimlibError
from tests.support.galleries import labelled_folder, synthetic_items

TINY = {"backbone": "tiny", "image_size": 32, "embedding_dim": 16, "weights": "none"}
N_CLASSES, PER_CLASS = 4, 8  # 32 images: enough for a train/validation split


def tiny_embedder(**overrides):
    from simlib.config import ModelConfig
    from simlib.model import Embedder

    return Embedder.build(ModelConfig(**{**TINY, **overrides}))


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory) -> Path:
    return labelled_folder(tmp_path_factory.mktemp("gallery"), synthetic_items(N_CLASSES, PER_CLASS))


@pytest.fixture(scope="module")
def template(tmp_path_factory, gallery_dir) -> Path:
    """An artifacts folder holding ``index/``: the gallery indexed by an untrained tiny model."""
    from simlib.data import load_image_folder
    from simlib.search import Searcher

    searcher, _ = Searcher.from_table(tiny_embedder(), load_image_folder(gallery_dir), progress=False)
    artifacts = tmp_path_factory.mktemp("artifacts")
    searcher.save(artifacts / "index")
    return artifacts


@pytest.fixture
def artifacts(template, tmp_path) -> Path:
    shutil.copytree(template, tmp_path / "artifacts")
    return tmp_path / "artifacts"


def save_trained(folder: Path, seed: int) -> str:
    """A (pretend-)trained tiny model saved in ``folder``; returns its fingerprint."""
    model = tiny_embedder(trained=True, seed=seed)
    model.save(folder)
    return model.fingerprint


def open_app(artifacts: Path, **options):
    from simlib.search.gallery import model_source, open_gallery

    searcher, _ = open_gallery(artifacts, progress=False, log=lambda m: None, **options)
    return searcher, model_source(searcher, artifacts, options.get("model_dir"))


# ----------------------------------------------------------------------------- which model
def test_untrained_index_is_kept_and_the_status_says_why(artifacts):
    searcher, source = open_app(artifacts)
    assert not searcher.embedder.config.trained
    assert source.startswith("no trained model in ") and "course/model_labels/" in source
    service = GalleryService(searcher, artifacts=artifacts, model_source=source)
    status = service.status()  # what a visitor reads: why this model, without the server's paths
    assert "model from: no trained model: a fresh model, backbone weights none" in status
    assert str(artifacts) not in status and "looked for" not in status


def test_the_courses_model_is_picked_up_then_a_newer_one(artifacts):
    """The course's model replaces an untrained index's; a trained model saved later wins; --model beats both."""
    course = artifacts / "course" / "model_labels"
    course_fp = save_trained(course, seed=1)
    searcher, source = open_app(artifacts)
    assert searcher.fingerprint == course_fp and searcher.index.manifest.model_fingerprint == course_fp
    assert source == f"{course} (the newest trained model in the artifacts folder)"
    assert len(searcher.index) == N_CLASSES * PER_CLASS  # the same gallery, re-indexed
    again, _ = open_app(artifacts)  # cached now: loaded, not re-indexed
    assert again.fingerprint == course_fp

    time.sleep(0.01)
    own_fp = save_trained(artifacts / "model", seed=2)
    later = time.time() + 5  # newer than the index just saved, whatever the file system's clock resolution
    os.utime(artifacts / "model" / "model.keras", (later, later))
    searcher, source = open_app(artifacts)
    assert searcher.fingerprint == own_fp and source.startswith(str(artifacts / "model"))

    explicit = artifacts.parent / "elsewhere"
    explicit_fp = save_trained(explicit, seed=3)
    searcher, source = open_app(artifacts, model_dir=explicit)
    assert searcher.fingerprint == explicit_fp and source == f"{explicit} (given with --model)"


def test_the_courses_folder_served_directly(artifacts):
    """``--artifacts artifacts/course`` (notebook 06's command) finds ``model_labels`` beside the index."""
    from simlib.search.gallery import trained_models

    course = artifacts / "course"
    shutil.copytree(artifacts / "index", course / "index")
    fp = save_trained(course / "model_labels", seed=1)
    assert trained_models(course) == [course / "model_labels"]
    searcher, source = open_app(course)
    assert searcher.fingerprint == fp and "model_labels" in source


def test_an_untrained_model_folder_is_not_a_trained_model(artifacts):
    from simlib.search.gallery import trained_models

    tiny_embedder().save(artifacts / "model")  # e.g. a model saved before training
    assert trained_models(artifacts) == []


# ----------------------------------------------------------------------------- an honest "no good match"
def calibrated(searcher, **threshold):
    from simlib.index import Threshold

    searcher.index.manifest = searcher.index.manifest.replace(threshold=Threshold(**threshold))


def test_unsupported_calibration_gives_one_plain_line_not_the_banner(artifacts, gallery_dir):
    from simlib.search import Searcher

    searcher = Searcher.load(artifacts / "index")
    # As measured on the product set with the untrained model: 0.9 precision only above 0.9997, 3 % clear it.
    calibrated(
        searcher,
        score=1.01,
        method="top-1 same-class precision",
        target=0.9,
        precision=0.9,
        coverage=0.03,
        supported=False,
    )
    service = GalleryService(searcher)
    query = str(next(gallery_dir.glob("class0/*.png")))
    found = service.search(query, 5)
    assert found.threshold is None and found.no_good_match is None and found.banner() == ""
    assert not any(h.weak for h in found.hits) and not any(c.endswith("low confidence") for _, c in found.gallery)
    note = found.calibration_note()
    assert note.startswith("This model cannot tell good matches from bad ones") and "only 3% " in note
    assert note == service.calibration_note()
    assert found.to_json()["no_good_match"] is None

    calibrated(searcher, score=1.01, method="top-1 same-class precision", target=0.9, precision=0.95,
               coverage=0.6, supported=True)  # fmt: skip
    found = service.search(query, 5)
    assert (
        found.no_good_match
        and found.banner().startswith("### Low confidence: no good match")
        and found.calibration_note() == ""
    )
    assert found.hits and all(h.weak for h in found.hits) and service.calibration_note() == ""


def test_a_threshold_from_before_coverage_was_recorded_still_works(artifacts):
    from simlib.search import Searcher

    searcher = Searcher.load(artifacts / "index")
    calibrated(searcher, score=1.01, method="test")  # version-1 manifest: no coverage, no supported
    service = GalleryService(searcher)
    assert service.calibration_note() == "" and service.describe()["threshold"] == 1.01


# ----------------------------------------------------------------------------- training from the app
def test_train_switches_to_the_new_model_without_a_restart(artifacts, gallery_dir):
    from simlib.search import Searcher
    from simlib.search.gallery import model_source, trained_models

    searcher = Searcher.load(artifacts / "index")
    off = GalleryService(searcher, artifacts=artifacts)
    assert not off.can_train
    with pytest.raises(SimlibError, match="--allow-train"):
        off.train()

    service = GalleryService(searcher, artifacts=artifacts, allow_train=True, model_source="untrained")
    assert service.can_train and service.untrained
    query = str(next(gallery_dir.glob("class2/*.png")))
    before = service.search(query, 3)
    seen: list[tuple[float, str]] = []
    # Colour tells these classes apart: the untrained model's validation Recall@1 is 1.0 already.
    logged: list[str] = []
    dropped = service.train(minutes=1.0, epochs=1, steps_per_epoch=2, log=logged.append)  # a normal outcome
    assert not dropped.kept and dropped.message.startswith("Not kept: the new model is no better")
    assert "validation Recall@1 1.00 -> 1.00" in dropped.message and "keeps serving it" in dropped.message
    assert logged[-1].startswith("new model not kept (no better than the served model)")
    assert service.searcher is searcher and service.can_train and not (artifacts / "model").exists()
    assert [p.name for p in artifacts.iterdir() if p.name.startswith(".training")] == []
    outcome = service.train(
        minutes=1.0, epochs=2, steps_per_epoch=2, progress=lambda f, t: seen.append((f, t)), require_better=False
    )
    assert outcome.kept and outcome.message.startswith("Kept: validation Recall@1 ")
    assert "now serves the new model" in outcome.message
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] == 1.0
    assert any(t.startswith("training: epoch 1 of at most 2") for _, t in seen)

    # Served now: the new model (trained, with the recommended head), the same gallery, searchable.
    assert service.searcher is not searcher and service.searcher.embedder.config.trained
    trained = service.searcher.embedder.config
    assert trained.trained and trained.head_pca > 0 and not service.untrained and not service.can_train
    after = service.search(query, 3)
    assert len(after.hits) == 3 and after.hits[0].path == before.hits[0].path == str(Path(query).resolve())
    assert len(service.searcher.index) == len(searcher.index)
    assert "trained on this gallery in the app" in service.status() and "untrained" not in service.status()
    # Saved: the next start serves it (model in <artifacts>/model, index re-built by it).
    assert trained_models(artifacts) == [artifacts / "model"]
    reopened = Searcher.load(artifacts / "index")
    assert reopened.fingerprint == service.searcher.fingerprint
    assert model_source(reopened, artifacts).startswith(str(artifacts / "model"))
    with pytest.raises(SimlibError, match="nothing to train"):
        service.train()


def test_train_needs_labels(tmp_path, gallery_dir):
    from simlib.data import load_image_folder
    from simlib.search import Searcher

    table = load_image_folder(gallery_dir)
    unlabelled = table.subset(range(len(table)))
    unlabelled = type(unlabelled)(
        ids=unlabelled.ids, paths=unlabelled.paths, labels=None, attributes=unlabelled.attributes, name="photos"
    )
    searcher, _ = Searcher.from_table(tiny_embedder(), unlabelled, progress=False)
    service = GalleryService(searcher, allow_train=True)
    assert not service.labelled and not service.can_train
    with pytest.raises(SimlibError, match="nothing to train"):
        service.train()
