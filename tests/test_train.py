"""Training: a short real run lowers the loss and saves a model the rest of simlib uses unchanged."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from simlib.errors import SimlibError
from simlib.train import TrainConfig, collapse_stats, fit, is_collapsed, load_images
from tests.support.cli import run_cli
from tests.support.galleries import SMALL_HEAD, labelled_folder, model_config, table_items
from tests.support.vectors import stratified_rows

SMALL = model_config(SMALL_HEAD)
# val 1/3 of 6 images per class = 2, so validation has a positive for every query
FAST = TrainConfig(
    epochs=3,
    steps_per_epoch=4,
    classes_per_batch=4,
    images_per_class=2,
    views=2,
    learning_rate=3e-3,
    val_fraction=0.34,
    test_fraction=0.0,
)


def test_collapse_monitor_flags_a_constant_embedding():
    rng = np.random.default_rng(0)
    spread_out = rng.normal(size=(64, 32))
    stats = collapse_stats(spread_out)
    assert abs(stats["mean_cosine"]) < 0.1 and stats["spread"] > 0.8 and not is_collapsed(stats)
    constant = np.tile(rng.normal(size=(1, 32)), (64, 1))
    stats = collapse_stats(constant)
    assert stats["mean_cosine"] == pytest.approx(1.0) and stats["spread"] < 1e-6 and is_collapsed(stats)
    # brute force for the mean pairwise cosine
    unit = spread_out / np.linalg.norm(spread_out, axis=1, keepdims=True)
    cos = unit @ unit.T
    assert collapse_stats(spread_out)["mean_cosine"] == pytest.approx(cos[~np.eye(64, dtype=bool)].mean())


def test_collapse_monitor_callback_warns_and_logs():
    from simlib.train.callbacks import CollapseMonitor

    collapse_monitor = CollapseMonitor(lambda: np.ones((8, 4)))
    logs: dict = {}
    with pytest.warns(RuntimeWarning, match="collapsing"):
        collapse_monitor.on_epoch_end(0, logs)
    assert logs["collapsed"] == 1.0 and collapse_monitor.collapsed_epochs == [1]


def _loss_on(model, images, labels, margin: float = 0.2) -> float:
    """Mean triplet loss over every (anchor, positive, negative) of the images (not only active ones)."""
    e = model.embed_batch(images)
    d = np.linalg.norm(e[:, None] - e[None], axis=-1)
    same = labels[:, None] == labels[None]
    valid = (same & ~np.eye(len(e), dtype=bool))[:, :, None] & ~same[:, None, :]
    return float(np.maximum(d[:, :, None] - d[:, None, :] + margin, 0)[valid].mean())


@pytest.mark.integration
def test_frozen_training_lowers_the_loss_and_saves_a_usable_model(small_table, tmp_path):
    from simlib.model import Embedder
    from simlib.search import Searcher
    from simlib.train import make_split

    trained_on = make_split(small_table, FAST).train  # held-out validation classes are not trained on
    images = load_images(trained_on, 32)
    before = _loss_on(Embedder.build(SMALL), images, trained_on.labels)
    result = fit(small_table, SMALL, FAST, out=tmp_path / "model", progress=False)
    after = _loss_on(result.embedder, images, trained_on.labels)
    assert after < before, (before, after)
    assert set(result.history) >= {"loss", "val_recall@1", "probe_mean_cosine", "probe_spread", "lr"}
    assert len(result.history["loss"]) == 3 and 1 <= result.best_epoch <= 3
    # the kept epoch is the best by the selection score; best_val_recall is its image-disjoint Recall@1
    assert result.history["val_score"][result.best_epoch - 1] == max(result.history["val_score"])
    assert result.best_val_recall == result.history["val_recall@1"][result.best_epoch - 1]

    saved = tmp_path / "model"
    assert {"model.keras", "config.json", "history.csv", "training.json"} <= {p.name for p in saved.iterdir()}
    info = json.loads((saved / "training.json").read_text())
    assert info["train_config"]["backbone"] == "frozen" and info["best_epoch"] == result.best_epoch
    loaded = Embedder.load(saved)
    assert loaded.fingerprint == result.embedder.fingerprint
    cfg = loaded.config
    assert cfg.trained and cfg.head_hidden == 32 and cfg.image_size == 32
    probe = [small_table.source(i) for i in range(3)]
    np.testing.assert_allclose(loaded.embed_images(probe), result.embedder.embed_images(probe), atol=1e-5)
    searcher, _ = Searcher.from_table(loaded, small_table, progress=False)
    hits = searcher.query(small_table.source(0), k=3)
    assert len(hits) == 3 and hits[0].id == int(small_table.ids[0])

    # the same seed gives the same model
    again = fit(small_table, SMALL, FAST, progress=False)
    np.testing.assert_allclose(again.embedder.embed_images(probe), result.embedder.embed_images(probe), atol=1e-6)
    assert again.embedder.fingerprint == result.embedder.fingerprint


@pytest.mark.integration
def test_self_mode_needs_no_labels(small_table):
    import dataclasses

    unlabelled = dataclasses.replace(small_table, labels=None)
    cfg = dataclasses.replace(FAST, mode="self", val_fraction=0.2, epochs=2)
    result = fit(unlabelled, SMALL, cfg, progress=False)
    assert result.embedder.config.trained
    assert 0.0 <= result.best_val_recall <= 1.0 and len(result.history["loss"]) == 2
    with pytest.raises(SimlibError, match="no labels"):
        fit(unlabelled, SMALL, FAST, progress=False)


@pytest.mark.integration  # builds a ResNet50
def test_mixed_bfloat16_model_computes_in_bfloat16_and_returns_float32(small_table):
    import dataclasses

    from simlib.model import Embedder

    model = Embedder.build(dataclasses.replace(SMALL, precision="mixed_bfloat16"))
    assert model.head.get_layer("head_hidden").compute_dtype == "bfloat16"
    e = model.embed_images([small_table.source(0)])
    assert e.dtype == np.float32 and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-3)


def test_bad_train_settings_are_refused():
    with pytest.raises(SimlibError, match="mode"):
        TrainConfig(mode="unsupervised")
    with pytest.raises(SimlibError, match="backbone"):
        TrainConfig(backbone="half")
    with pytest.raises(SimlibError, match="precision"):
        model_config(precision="float16")


@pytest.mark.slow
@pytest.mark.integration  # builds a ResNet50
def test_partial_backbone_trains_on_images(small_table):
    import dataclasses

    cfg = dataclasses.replace(FAST, backbone="partial", epochs=1, steps_per_epoch=2, learning_rate=1e-4)
    result = fit(small_table, SMALL, cfg, progress=False)
    assert np.isfinite(result.history["loss"]).all()
    assert result.embedder.backbone.get_layer("conv5_block3_3_conv").trainable


@pytest.mark.integration  # in-process now: ~15 s, no longer slow
def test_cli_train_end_to_end(product_table, tmp_path):
    data = labelled_folder(
        tmp_path / "folder", table_items(product_table, stratified_rows(product_table.labels, 4, 6, seed=1))
    )
    out = tmp_path / "model"
    proc = run_cli(
        "train", "--data", str(data), "--mode", "labels", "--out", str(out), "--weights", "none",
        "--image-size", "32", "--epochs", "2", "--steps-per-epoch", "3", "--classes-per-batch", "3",
        "--images-per-class", "2", "--json", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["out"] == str(out) and len(summary["history"]["loss"]) == 2
    # the trained model works with the unchanged index and eval commands
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = run_cli("index", "--data", data, "--model", out, "--out", tmp_path / "idx", "--quiet")
        assert index.returncode == 0, index.stderr[-2000:]
        evaluated = run_cli("eval", "--data", data, "--model", out, "--split", "all", "--quiet")
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    bad = run_cli("train", "--data", str(data), "--mode", "labels", "--out", str(out), "--backbone", "half")
    assert bad.returncode == 2
