""":func:`fit`: split the data, load the images, pick the strategy, run it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simlib.config import ModelConfig
from simlib.data import ImageTable, load_images
from simlib.errors import SimlibError
from simlib.train.base import MAX_TRAIN_REFS, PROBE_SIZE, Strategy, TrainingData, ValidationData, say_to_stderr
from simlib.train.plan import TrainConfig, TrainResult, recommended_head
from simlib.train.samplers import label_codes
from simlib.train.split import Split, make_split
from simlib.train.strategies import STRATEGIES, augmented_views


def training_data(split: Split, tc: TrainConfig, config: ModelConfig, progress: bool = False) -> TrainingData:
    """Decode a split's training and validation images and fix the batch shape and the validation sets."""
    size, resize = config.image_size, config.resize
    train_t, val_t = split.train, split.val
    images = load_images(train_t, size, resize, progress and "decoding train images")
    val_images = load_images(val_t, size, resize, progress and "decoding val images")
    if tc.labelled:
        ids = label_codes(train_t.labels)
        n_groups = len(np.unique(ids))
    else:
        ids = np.arange(len(train_t), dtype=np.int64)
        n_groups = len(train_t)
    p = min(tc.classes_per_batch, n_groups)
    k = tc.images_per_class if tc.labelled else min(tc.images_per_class, tc.n_views)
    steps = tc.steps_per_epoch or max(10, len(train_t) * (1 if tc.labelled else tc.n_views) // (p * k))
    # Labels: val images query val + (up to 2,000) train images, which keeps Recall@1 defined and
    # stable on small folders; held-out-class images query each other. Self: a fixed augmented copy
    # of each val image must find its original (near-duplicate retrieval, no labels needed).
    rng = np.random.default_rng(tc.seed)
    probe = val_images[rng.permutation(len(val_images))[:PROBE_SIZE]]
    if tc.labelled:
        ref_rows = np.sort(rng.permutation(len(images))[:MAX_TRAIN_REFS])
        unseen = split.unseen
        val = ValidationData(
            seen=val_images,
            seen_labels=val_t.labels,
            probe=probe,
            ref_rows=ref_rows,
            ref_labels=train_t.labels[ref_rows],
            unseen=None if unseen is None else load_images(unseen, size, resize, progress and "decoding unseen val"),
            unseen_labels=None if unseen is None else unseen.labels,
        )
    else:
        queries = augmented_views(val_images, 2, seed=tc.seed + 99, size=size)[1]
        val = ValidationData(seen=val_images, seen_labels=None, probe=probe, queries=queries)
    return TrainingData(images, ids, p, k, steps, val, split)


def strategy_for(tc: TrainConfig) -> type[Strategy]:
    """The strategy class for a plan's backbone policy."""
    return STRATEGIES[tc.backbone]


def fit(
    table: ImageTable,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    embedder=None,
    feedback=None,
    callbacks: Sequence[Any] = (),
    say: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train an embedding model with triplet loss and (optionally) save it.

    Args:
        table: the images; labels are needed in ``mode="labels"`` and ignored in ``mode="self"``.
        model_config: the model to build (weights must be resolved); ignored when ``embedder`` is
            given. Default: ``ModelConfig(**recommended_head("none"))``, the head chosen
            for a random-init backbone (see :data:`simlib.train.RANDOM_INIT_HEAD`).
        train_config: how to train.
        out: folder to save the trained model in (``model.keras``, ``config.json``,
            ``history.csv``, ``training.json``); None keeps it in memory only.
        progress: show progress bars and per-epoch lines.
        embedder: start from this :class:`~simlib.model.Embedder` instead of building one (e.g.
            ``Embedder.load(dir)`` of the served model, to refine it with feedback); it is copied,
            not changed.
        feedback: user feedback to train on as well: a feedback folder or ``feedback.jsonl``,
            entries from :func:`simlib.search.feedback.read_feedback`, or triplets from
            :func:`simlib.search.feedback.feedback_triplets`. Each batch's loss becomes the mined batch
            loss + ``feedback_weight`` × the triplet loss of ``feedback_batch`` feedback triplets.
        callbacks: more Keras callbacks for the training loop (e.g. ``keras.callbacks.TensorBoard``);
            they see the trained part only: the head on a frozen backbone, else the whole model.
        say: where the run's stage lines go (decoding, backbone features, the plan, the result); default:
            stderr when ``progress``, else nowhere.

    Returns:
        A :class:`TrainResult` holding a new embedder with the best validation weights.
    """
    import keras

    from simlib.model import Embedder
    from simlib.train.feedback import feedback_images

    tc = train_config or TrainConfig()
    t_start = time.perf_counter()
    if tc.labelled and not table.has_labels:
        raise SimlibError(
            f"{table.name} has no labels: use --mode self (label-free), or class sub-folders / a label column"
        )
    keras.utils.set_random_seed(tc.seed)
    split = make_split(table, tc)
    if len(split.train) < 4 or len(split.val) < 2:
        raise SimlibError(f"{table.name} has too few images to train on ({len(table)}): use at least a few dozen")
    if embedder is None:
        config = model_config or ModelConfig(**recommended_head("none"))
        if config.head_pca >= len(split.train):  # a PCA needs more images than components: fewer components
            pca = len(split.train) - 1 if len(split.train) > config.embedding_dim else 0
            config = dataclasses.replace(config, head_pca=pca)
        embedder = Embedder.build(config)
    else:  # train a copy: the caller's embedder (and its fingerprint) stays valid
        embedder = embedder.clone(backbone=tc.backbone != "frozen")
    tell = say or say_to_stderr(progress)
    tell(f"decoding {len(split.train) + len(split.val) + len(split.unseen or ()):,} images")
    data = training_data(split, tc, embedder.config, progress)
    triplets = None
    if feedback is not None:
        triplets = feedback_images(feedback, data.images, embedder.image_size, embedder.config.resize, tc.seed)
    strategy = strategy_for(tc)(embedder, tc, data, tell, progress)
    return strategy.run(out=out, callbacks=callbacks, feedback=triplets, t_start=t_start)
