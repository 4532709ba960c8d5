"""compare() on synthetic images and the tiny backbone: seen and unseen classes apart, and the refusal to
score a model on a class-disjoint split whose classes it trained on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from simlib.config import ModelConfig
from simlib.data import ImageTable, split_table
from simlib.errors import SimlibError
from simlib.evaluation import compare, format_table

TINY = ModelConfig(backbone="tiny", image_size=32, embedding_dim=16, weights="none")


def colour_table(n_classes: int = 10, per_class: int = 8, seed: int = 0) -> ImageTable:
    """Noisy solid colours, one per class, in memory."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (n_classes, 3))
    images = np.clip(
        colours.repeat(per_class, 0)[:, None, None, :] + rng.normal(0, 20, (n_classes * per_class, 32, 32, 3)), 0, 255
    )
    labels = np.asarray([f"class{c}" for c in range(n_classes) for _ in range(per_class)], dtype=object)
    return ImageTable(ids=np.arange(len(labels)), arrays=images.astype(np.uint8), labels=labels, name="colours")


@pytest.fixture(scope="module")
def embedders():
    from simlib.model import Embedder

    untrained = Embedder.build(TINY)
    trained = Embedder.assemble(untrained.backbone, untrained.head, dataclasses.replace(TINY, trained=True))
    return untrained, trained


def test_seen_and_unseen_classes_are_scored_apart(embedders):
    untrained, trained = embedders
    table = colour_table()
    test = split_table(table, seed=0, by="image")["test"]
    seen = sorted(set(test.labels.astype(str)))[:6]
    rows = compare(
        table, {"untrained": untrained, "trained": trained}, trained_classes={trained.fingerprint: seen},
        splits=("image",), near_duplicates=False,
    ).rows  # fmt: skip
    parts = {(r["part"], r["method"]): r for r in rows}
    assert set(parts) == {(p, m) for p in ("all", "seen", "unseen") for m in ("pixels", "untrained", "trained")}
    n_seen = int(np.isin(test.labels.astype(str), seen).sum())
    assert parts["seen", "pixels"]["n_queries"] == n_seen
    assert parts["unseen", "pixels"]["n_queries"] == len(test) - n_seen
    assert "unseen" in format_table(rows)


def test_a_model_is_refused_on_class_disjoint_classes_it_trained_on(embedders):
    untrained, trained = embedders
    table = colour_table()
    all_classes = sorted(set(table.labels.astype(str)))
    with pytest.raises(SimlibError, match=r"trained on .* class-disjoint test classes"):
        compare(table, {"trained": trained}, trained_classes={trained.fingerprint: all_classes}, splits=("class",))
    with pytest.raises(SimlibError, match="training classes are unknown"):
        compare(table, {"trained": trained}, splits=("class",))
    # trained on the class split's training classes only: scored, and every row is "unseen"
    split = split_table(table, seed=0, by="class")
    train_classes = sorted(set(split["train"].labels.astype(str)))
    rows = compare(
        table, {"untrained": untrained, "trained": trained}, trained_classes={trained.fingerprint: train_classes},
        splits=("class",),
    ).rows  # fmt: skip
    assert {r["part"] for r in rows} == {"unseen"} and {r["method"] for r in rows} == {"pixels", "untrained", "trained"}
    # None leaves a method out of the class split
    rows = compare(
        table, {"untrained": untrained, "trained": trained}, class_models={"trained": None}, splits=("class",)
    ).rows
    assert {r["method"] for r in rows} == {"pixels", "untrained"}


def test_head_before_training_is_the_trained_models_starting_point(tmp_path):
    """The rebuilt "before" equals a run that took no real step (learning rate ~0), and differs from a real run."""
    from simlib.evaluation import HEAD_BEFORE_TRAINING, backbone_name, head_before_training
    from simlib.train import TrainConfig, TrainingRecord, fit

    table = colour_table(n_classes=10, per_class=8)
    config = dataclasses.replace(TINY, head_norm=True, head_pca=20, head_hidden=8)
    plan = dict(epochs=1, steps_per_epoch=2, classes_per_batch=4, images_per_class=2, warmup_epochs=0, margin=1.5)
    still = fit(table, config, TrainConfig(learning_rate=1e-9, **plan), out=tmp_path / "still", progress=False)
    moved = fit(table, config, TrainConfig(learning_rate=0.3, **plan), out=tmp_path / "moved", progress=False)
    before = head_before_training(moved.embedder, TrainingRecord.load(tmp_path / "moved"), table)
    assert not before.config.trained and before.config.head_pca == 20
    probe = table.arrays[::7]
    np.testing.assert_allclose(before.embed_batch(probe), still.embedder.embed_batch(probe), atol=1e-4)
    assert np.abs(before.embed_batch(probe) - moved.embedder.embed_batch(probe)).max() > 1e-3
    assert HEAD_BEFORE_TRAINING == "head before training"
    assert backbone_name("none") == "untrained backbone" and backbone_name("imagenet") == "ImageNet backbone"


def test_compare_pairs_every_method_with_the_earlier_ones_on_the_same_queries(embedders):
    untrained, trained = embedders
    result = compare(
        colour_table(), {"untrained": untrained, "trained": trained}, splits=("image",), near_duplicates=True
    )
    pairs = [(d.split, d.a, d.b) for d in result.differences if d.metric == "recall@1"]
    order = (("untrained", "pixels"), ("trained", "pixels"), ("trained", "untrained"))
    assert pairs == [(s, a, b) for s in ("image", "near-duplicate") for a, b in order]
    d = result.difference("image", "all", "pixels", "trained", "map@r")  # asked the other way round
    assert (d.a, d.b) == ("pixels", "trained")
    assert d.difference == pytest.approx(
        result.row("image", "all", "pixels")["map@r"] - result.row("image", "all", "trained")["map@r"]
    )
    assert d.low == pytest.approx(-result.difference("image", "all", "trained", "pixels", "map@r").high)
    assert d.n_queries == result.row("image", "all", "pixels")["n_queries"]
