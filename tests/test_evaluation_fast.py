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
    )  # fmt: skip
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
    )  # fmt: skip
    assert {r["part"] for r in rows} == {"unseen"} and {r["method"] for r in rows} == {"pixels", "untrained", "trained"}
    # None leaves a method out of the class split
    rows = compare(
        table, {"untrained": untrained, "trained": trained}, class_models={"trained": None}, splits=("class",)
    )
    assert {r["method"] for r in rows} == {"pixels", "untrained"}
