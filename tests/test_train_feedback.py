"""Training on user feedback: rejected results move away from their query, confirmed ones do not."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from simlib.errors import SimlibError
from simlib.search.feedback import FeedbackStore
from simlib.train import TrainConfig, feedback_images, fit
from tests.support.cli import run_cli
from tests.support.galleries import SMALL_HEAD, labelled_folder, model_config, table_items
from tests.support.vectors import stratified_rows

pytestmark = pytest.mark.integration  # every test trains a ResNet50-based model

SMALL = model_config(SMALL_HEAD)
FAST = TrainConfig(
    epochs=1,
    steps_per_epoch=6,
    classes_per_batch=4,
    images_per_class=2,
    learning_rate=3e-3,
    warmup_epochs=0,
    val_fraction=0.34,
    test_fraction=0.0,
)


def _cosines(model, query, others) -> np.ndarray:
    e = model.embed_images([query, *others])
    return e[1:] @ e[0]


def _feedback(small_table, model, folder):
    """Query X = image 0; Y = the most similar image of another class (rejected); Z = one of X's class (confirmed)."""
    labels = small_table.labels
    e = model.embed_images([small_table.source(i) for i in range(len(small_table))])
    cos = e @ e[0]
    other = np.flatnonzero(labels != labels[0])
    y = int(other[np.argmax(cos[other])])
    z = int(np.flatnonzero(labels == labels[0])[1])
    store = FeedbackStore(folder)
    x_img = small_table.source(0)
    store.add(x_img, int(small_table.ids[y]), "not_similar", small_table.source(y))
    store.add(x_img, int(small_table.ids[z]), "similar", small_table.source(z))
    return store, small_table.source(y), small_table.source(z)


@pytest.mark.slow  # about 30 s alone on 2 cores (three models, two fits), 70 s under load
def test_training_with_feedback_moves_the_rejected_result_away(small_table, tmp_path):
    from simlib.model import Embedder

    start = Embedder.build(SMALL).save(tmp_path / "served")
    served = Embedder.load(start)
    store, y, z = _feedback(small_table, served, tmp_path / "feedback")
    query = store.read()[0].query
    before = _cosines(served, query, [y, z])

    tc = dataclasses.replace(FAST, feedback_weight=2.0)
    with_fb = fit(small_table, train_config=tc, progress=False, embedder=served, feedback=store.directory,
                  out=tmp_path / "refined")  # fmt: skip
    without = fit(small_table, train_config=tc, progress=False, embedder=served)
    after = _cosines(with_fb.embedder, query, [y, z])
    plain = _cosines(without.embedder, query, [y, z])
    # the rejected result is further from the query than before, and than training without feedback
    assert after[0] < before[0] and after[0] < plain[0], (before, after, plain)
    # the confirmed result now ranks above the rejected one, by more than without feedback
    assert after[1] - after[0] > max(plain[1] - plain[0], 0), (before, after, plain)

    np.testing.assert_allclose(_cosines(served, query, [y, z]), before, atol=1e-6)  # training copied it
    refined = Embedder.load(tmp_path / "refined")  # a normal simlib model
    assert refined.config.trained
    np.testing.assert_allclose(_cosines(refined, query, [y, z]), after, atol=1e-5)
    info = json.loads((tmp_path / "refined" / "training.json").read_text())
    assert info["feedback_triplets"] == 1 and info["train_config"]["feedback_weight"] == 2.0


def test_feedback_images_fill_missing_positives_and_negatives(small_table, tmp_path):
    from simlib.train import load_images

    store = FeedbackStore(tmp_path)
    store.add(small_table.source(0), 1, "not_similar", small_table.source(1))  # no positive
    store.add(small_table.source(2), 3, "similar", small_table.source(3))  # no negative
    gallery = load_images(small_table.subset(np.arange(10, 20)), 32)
    a, p, n = feedback_images(store.directory, gallery, 32, seed=0)
    assert a.shape == p.shape == n.shape == (2, 32, 32, 3) and a.dtype == np.uint8
    by_anchor = {int(a[i].sum()): i for i in range(2)}
    first = by_anchor[int(load_images(small_table.subset([0]), 32)[0].sum())]
    second = 1 - first
    assert not np.array_equal(p[first], a[first])  # an augmented copy of the anchor, not the anchor itself
    assert any(np.array_equal(n[second], g) for g in gallery)  # a gallery image
    _, p2, n2 = feedback_images(store.path, gallery, 32, seed=0)
    assert np.array_equal(p2, p) and np.array_equal(n2, n)

    empty = FeedbackStore(tmp_path / "empty")
    empty.add(small_table.source(0), 1, "similar")  # no result path: nothing to train on
    with pytest.raises(SimlibError, match="no usable triplet"):
        feedback_images(empty.directory, gallery, 32)


@pytest.mark.integration  # in-process now: ~15 s, no longer slow
def test_cli_train_with_feedback(product_table, tmp_path):
    rows = stratified_rows(product_table.labels, 4, 6, seed=1)
    data = labelled_folder(tmp_path / "folder", table_items(product_table, rows))
    store = FeedbackStore(tmp_path / "feedback")
    store.add(product_table.paths[rows[0]], int(rows[-1]), "not_similar", product_table.paths[rows[-1]])
    out = tmp_path / "model"
    proc = run_cli(
        "train", "--data", str(data), "--mode", "labels", "--feedback", str(store.path), "--out", str(out),
        "--weights", "none", "--image-size", "32", "--epochs", "1", "--steps-per-epoch", "3",
        "--classes-per-batch", "3", "--images-per-class", "2", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "training.json").read_text())["feedback_triplets"] == 1
    missing = run_cli("train", "--data", str(data), "--mode", "labels", "--feedback", str(tmp_path / "nope"),
                      "--out", str(tmp_path / "m2"), "--weights", "none", "--image-size", "32")  # fmt: skip
    assert missing.returncode == 1 and "no feedback file" in missing.stderr
