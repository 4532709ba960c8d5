"""Training on user feedback: (query, result marked similar, result marked not similar) triplets.

Each batch gets ``feedback_batch`` feedback triplets appended after the P×K batch, and the loss
becomes :class:`~simlib.train.losses.FeedbackTripletLoss` (mined batch loss + weight × their triplet loss).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from simlib.errors import SimlibError
from simlib.train.plan import TrainConfig


def feedback_images(
    feedback: Any, gallery: np.ndarray, size: int, resize: str = "pad", seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User feedback as (anchor, positive, negative) uint8 image arrays, each (T, S, S, 3).

    The query is the anchor, a result marked similar the positive, one marked not similar the
    (hard) negative. A missing positive is an augmented copy of the anchor; a missing negative a
    random ``gallery`` image (both seeded). Triplets whose images can no longer be read are left
    out with a warning.

    Args:
        feedback: a feedback folder or file, :class:`simlib.search.feedback.Feedback` entries, or
            ``(anchor, positive | None, negative | None)`` path triplets.
        gallery: uint8 (N, S, S, 3) images to draw missing negatives from (the training images).
        size: image side in pixels.
        resize: the model's resize mode.
        seed: seeds the augmentations and the random negatives.

    Raises:
        SimlibError: the feedback holds no usable triplet.
    """
    import os

    from simlib.data import prepare_image
    from simlib.search.feedback import feedback_triplets
    from simlib.train.samplers import Augmenter

    items = feedback if not isinstance(feedback, str | os.PathLike) else None
    if items is not None and all(isinstance(t, tuple) for t in items):
        triplets = list(items)
    else:
        triplets = feedback_triplets(feedback if items is None else items)
    cache: dict[str, np.ndarray | None] = {}

    def image(path: str | None) -> np.ndarray | None:
        if path is not None and path not in cache:
            try:
                cache[path] = prepare_image(path, size, resize)
            except SimlibError as e:
                warnings.warn(f"feedback image left out: {e}", RuntimeWarning, stacklevel=3)
                cache[path] = None
        return None if path is None else cache[path]

    rng = np.random.default_rng(seed + 7)
    augment = Augmenter(size, seed=seed + 7)
    anchors, positives, negatives = [], [], []
    for a_path, p_path, n_path in triplets:
        a, pos, neg = image(a_path), image(p_path), image(n_path)
        if a is None or (p_path is not None and pos is None) or (n_path is not None and neg is None):
            continue
        anchors.append(a)
        positives.append(pos if pos is not None else augment(a[None])[0])
        negatives.append(neg if neg is not None else gallery[rng.integers(len(gallery))])
    if not anchors:
        raise SimlibError(
            "the feedback holds no usable triplet (no verdict on a result with an image file that can be read)"
        )
    return np.stack(anchors), np.stack(positives), np.stack(negatives)


def add_feedback(dataset, triplets: tuple[np.ndarray, np.ndarray, np.ndarray], tc: TrainConfig, steps: int):
    """Append ``tc.feedback_batch`` feedback triplets (drawn with replacement) to every batch.

    Args:
        dataset: the strategy's ``(inputs, ids)`` batches.
        triplets: anchors, positives and negatives, each already in the trainable model's input
            form (pooled features on the frozen path, float images otherwise).
        tc: the training plan (weight, batch, seed, mining, margin).
        steps: steps per epoch.

    Returns:
        ``(dataset, loss)``: the joined batches and the loss that reads them.
    """
    import tensorflow as tf

    from simlib.train.losses import FeedbackTripletLoss

    a, p, neg = (tf.constant(np.asarray(t, np.float32)) for t in triplets)
    n, f = len(triplets[0]), tc.feedback_batch
    picks = np.random.default_rng(tc.seed + 11).integers(n, size=(tc.epochs * steps, f))
    pad = tf.fill((3 * f,), tf.constant(-1, tf.int64))

    def join(batch, pick):
        x, y = batch
        x = tf.concat([x, tf.gather(a, pick), tf.gather(p, pick), tf.gather(neg, pick)], axis=0)
        return x, tf.concat([y, pad], axis=0)

    ds = tf.data.Dataset.zip(dataset, tf.data.Dataset.from_tensor_slices(picks)).map(join).prefetch(2)
    loss = FeedbackTripletLoss(n_feedback=f, weight=tc.feedback_weight, mining=tc.mining_used, margin=tc.margin)
    return ds, loss
