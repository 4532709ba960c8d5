"""Training on synthetic shapes with the tiny backbone (fast tier: no ResNet50, no data folder).

Covers the split and its class-disjoint validation, the model-selection rule, both strategies
and what ``training.json`` records.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from simlib.config import ModelConfig
from simlib.data import ImageTable, split_table
from simlib.errors import SimlibError
from simlib.train import (
    FineTune,
    FrozenHead,
    Strategy,
    TrainConfig,
    TrainingRecord,
    fit,
    make_split,
    strategy_for,
)

TINY = ModelConfig(backbone="tiny", image_size=32, embedding_dim=16, weights="none", head_hidden=16, head_norm=True)
QUICK = TrainConfig(
    epochs=1,
    steps_per_epoch=2,
    classes_per_batch=4,
    images_per_class=2,
    learning_rate=3e-3,
    warmup_epochs=0,
    val_fraction=0.25,
    val_classes=0.2,
    test_fraction=0.2,
)
COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (128, 128, 0), (0, 0, 128), (128, 0, 0)]  # fmt: skip


def shapes_table(n_classes: int = 10, per_class: int = 8, size: int = 32, seed: int = 0) -> ImageTable:
    """A labelled table of coloured shapes: class c is colour c, a square (even c) or a disc (odd c)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for c, _ in itertools.product(range(n_classes), range(per_class)):
        img = np.full((size, size, 3), 255, np.uint8)
        cy, cx, r = (*rng.integers(size // 3, 2 * size // 3, 2), int(rng.integers(size // 6, size // 4)))
        mask = (
            (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r) if c % 2 == 0 else (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        )
        img[mask] = COLOURS[c % len(COLOURS)]
        noise = rng.integers(-20, 21, img.shape)
        images.append(np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8))
        labels.append(f"class_{c}")
    n = len(images)
    labels = np.asarray(labels, dtype=object)
    return ImageTable(ids=np.arange(n, dtype=np.int64), arrays=np.stack(images), labels=labels, name="shapes")


@pytest.fixture(scope="module")
def shapes() -> ImageTable:
    return shapes_table()


# ----------------------------------------------------------------------------- the split
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_class_split_validation_classes_are_neither_test_nor_training_classes(shapes, seed):
    tc = dataclasses.replace(QUICK, split_by="class", seed=seed)
    split = make_split(shapes, tc)
    unseen, train, test = set(split.unseen_classes), set(split.train_classes), set(split.test_classes)
    assert unseen and train and test
    assert not unseen & test and not unseen & train and not train & test
    assert set(split.val.labels.tolist()) <= train  # the seen validation: other images of the training classes
    assert not set(split.val.ids.tolist()) & set(split.train.ids.tolist())
    # the test split is the one evaluation draws for the same settings, untouched
    expected = split_table(shapes, seed=seed, val=tc.val_classes, test=tc.test_fraction, by="class")["test"]
    assert split.test.ids.tolist() == expected.ids.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_image_split_holds_out_whole_training_classes_and_no_test_image(shapes, seed):
    tc = dataclasses.replace(QUICK, split_by="image", seed=seed)
    split = make_split(shapes, tc)
    assert len(split.unseen_classes) == 2  # max(2, round(10 × 0.2))
    assert not set(split.unseen_classes) & set(split.train_classes)
    assert not set(split.unseen_classes) & set(split.val.labels.tolist())  # the seen validation is seen classes
    test_ids = set(split.test.ids.tolist())
    assert not set(split.unseen.ids.tolist()) & test_ids  # never a test image
    expected = split_table(shapes, seed=seed, val=tc.val_fraction, test=tc.test_fraction, by="image")["test"]
    assert split.test.ids.tolist() == expected.ids.tolist()
    # every image is in exactly one part
    parts = [split.train, split.val, split.unseen, split.test]
    assert sorted(i for p in parts for i in p.ids.tolist()) == shapes.ids.tolist()


def test_too_few_classes_or_none_asked_leave_no_class_disjoint_validation():
    four = shapes_table(n_classes=4)
    split = make_split(four, QUICK)
    assert split.unseen is None and "too few classes" in split.note and len(split.train_classes) == 4
    off = make_split(shapes_table(), dataclasses.replace(QUICK, val_classes=0.0))
    assert off.unseen is None and off.note == "val_classes=0"


def test_self_mode_uses_no_labels(shapes):
    split = make_split(shapes, dataclasses.replace(QUICK, mode="self"))
    assert split.unseen is None and split.train_classes == () and split.settings["labels_used"] is False


def test_bad_selection_rule_is_refused():
    with pytest.raises(SimlibError, match="select_on"):
        TrainConfig(select_on="best")
    with pytest.raises(SimlibError, match="val_classes"):
        TrainConfig(val_classes=1.0)


# ----------------------------------------------------------------------------- model selection
SEEN = [0.50, 0.90, 0.60, 0.40]  # best epoch 2
UNSEEN = [0.30, 0.20, 0.60, 0.70]  # best epoch 4; the mean is best at epoch 3


@pytest.mark.parametrize(("rule", "best_epoch"), [("seen", 2), ("unseen", 4), ("mean", 3)])
def test_model_selection_follows_the_stated_rule(shapes, tmp_path, monkeypatch, rule, best_epoch):
    calls = []

    def fake_recalls(self):
        calls.append(1)
        epoch = len(calls) - 2  # the first call scores the untrained model
        if epoch < 0:
            return {"val_recall@1": 0.0, "val_unseen_recall@1": 0.0}
        return {"val_recall@1": SEEN[epoch], "val_unseen_recall@1": UNSEEN[epoch]}

    monkeypatch.setattr(Strategy, "recalls", fake_recalls)
    tc = dataclasses.replace(QUICK, epochs=4, select_on=rule, patience=10)
    result = fit(shapes, TINY, tc, out=tmp_path / "model", progress=False)
    assert result.best_epoch == best_epoch and result.select_on == rule
    assert result.history["val_unseen_recall@1"] == UNSEEN and result.history["val_recall@1"] == SEEN
    assert result.best_val_recall == SEEN[best_epoch - 1]
    assert result.best_val_unseen_recall == UNSEEN[best_epoch - 1]

    record = TrainingRecord.load(tmp_path / "model")
    split = make_split(shapes, tc)
    assert record.select_on == rule and record.best_epoch == best_epoch and record.labels_used
    assert record.classes == split.train_classes and record.val_classes == split.unseen_classes
    assert record.split == {"seed": 0, "split_by": "image", "val_fraction": 0.25, "val_classes": 0.2,
                            "test_fraction": 0.2, "labels_used": True}  # fmt: skip
    assert record.seen(split.train_classes[0]) and not record.seen(split.unseen_classes[0])


def test_early_stopping_reads_the_selection_score(shapes, monkeypatch):
    unseen = iter([0.0, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1])  # the unseen recall only falls after epoch 1

    def fake_recalls(self):
        return {"val_recall@1": 0.5, "val_unseen_recall@1": next(unseen)}

    monkeypatch.setattr(Strategy, "recalls", fake_recalls)
    tc = dataclasses.replace(QUICK, epochs=6, select_on="unseen", patience=2)
    result = fit(shapes, TINY, tc, progress=False)
    assert result.best_epoch == 1 and len(result.history["loss"]) == 3


# ----------------------------------------------------------------------------- strategies
def test_strategies_share_the_base_loop():
    assert issubclass(FrozenHead, Strategy) and issubclass(FineTune, Strategy)
    for cls in (FrozenHead, FineTune):
        assert cls.run is Strategy.run and cls.validate is Strategy.validate
    assert strategy_for(TrainConfig()) is FrozenHead
    assert strategy_for(TrainConfig(backbone="partial")) is strategy_for(TrainConfig(backbone="full")) is FineTune


def _weights(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}


def _changed(before, after) -> set[str]:
    pairs = {name: zip(before[name], after[name], strict=True) for name in before}
    return {name for name, ws in pairs.items() if any(not np.array_equal(a, b) for a, b in ws)}


@pytest.mark.filterwarnings("ignore:epoch 1. embeddings are collapsing:RuntimeWarning")  # two steps, random init
@pytest.mark.parametrize(
    ("backbone", "trained_backbone_layers"),
    [("frozen", set()), ("partial", {"tiny_conv2"}), ("full", {"tiny_conv1", "tiny_conv2"})],
)
def test_each_strategy_runs_a_short_epoch_on_the_tiny_backbone(shapes, tmp_path, backbone, trained_backbone_layers):
    from simlib.model import Embedder

    start = Embedder.build(TINY)
    tc = dataclasses.replace(QUICK, backbone=backbone, learning_rate=1e-2)
    result = fit(shapes, train_config=tc, embedder=start, out=tmp_path / "m", progress=False)
    assert np.isfinite(result.history["loss"]).all() and len(result.history["loss"]) == 1
    assert {"val_recall@1", "val_unseen_recall@1", "val_score", "probe_spread", "lr"} <= set(result.history)
    assert _changed(_weights(start.backbone), _weights(result.embedder.backbone)) == trained_backbone_layers
    assert "projection" in _changed(_weights(start.head), _weights(result.embedder.head))
    loaded = Embedder.load(tmp_path / "m")
    assert loaded.config.trained and loaded.fingerprint == result.embedder.fingerprint
    assert loaded.fingerprint != start.fingerprint


def test_self_mode_records_that_no_labels_were_used(shapes, tmp_path):
    tc = dataclasses.replace(QUICK, mode="self", classes_per_batch=8)
    fit(shapes, TINY, tc, out=tmp_path / "m", progress=False)
    record = TrainingRecord.load(tmp_path / "m")
    assert not record.labels_used and record.classes is None and record.val_classes == ()
    assert record.seen("class_0") is None


def test_training_record_of_an_untrained_or_older_model(tmp_path):
    with pytest.raises(SimlibError, match=r"training\.json"):
        TrainingRecord.load(tmp_path)
    (tmp_path / "training.json").write_text('{"train_config": {"mode": "labels"}, "best_epoch": 3}')
    old = TrainingRecord.load(tmp_path)
    assert old.classes is None and old.labels_used and old.best_epoch == 3 and old.seen("x") is None


def test_an_early_stopped_run_ends_its_progress_bar_as_finished_not_failed(capsys):
    from simlib.train import EpochProgress

    bar = EpochProgress(5, "model_x")
    bar.on_train_begin()
    for epoch in range(2):
        bar.on_epoch_end(epoch, {"val_recall@1": 0.5})
    bar.on_train_end()
    # tqdm marks a bar closed short of its total as an error: the total is what ran
    assert bar.bar.total == bar.bar.n == 2
    assert "model_x (stopped after epoch 2 of 5)" in capsys.readouterr().err
