"""Triplet losses on L2-normalised embeddings: offline triplets and online mining in a batch.

A triplet (anchor a, positive p, negative n) costs ``max(d(a, p) - d(a, n) + margin, 0)``: the
positive must be closer to the anchor than the negative by at least the margin. Offline
triplets are given; the batch losses look at every triplet a labelled batch holds:

- batch-all: the mean over the triplets that still cost something ("active" triplets);
- batch-hard: per anchor, its farthest positive against its closest negative;
- semi-hard (FaceNet): per anchor-positive pair, the closest negative that is still farther
  than the positive; when there is none, the farthest negative (TensorFlow Addons' rule).

Inputs are L2-normalised here again (a no-op for simlib models), so the distance is the
Euclidean distance on the unit sphere, in [0, 2] (``distance="squared"``: its square, [0, 4]).
Functions use ``keras.ops`` and run on tensors or numpy arrays; :class:`TripletLoss`,
:class:`BatchTripletLoss` and :class:`FeedbackTripletLoss` wrap them as Keras losses (registered
for saving under the ``simlib`` package). Importing this module imports Keras: nothing in
``import simlib`` imports it.
"""

from __future__ import annotations

import keras
from keras import ops

from simlib.errors import SimlibError

DEFAULT_MARGIN = 0.2
MINING = ("all", "hard", "semihard")
DISTANCES = ("euclidean", "squared")
# Larger than any distance on the unit sphere: a stand-in for +inf that keeps gradients finite.
_FAR = 16.0


def _check(margin: float, distance: str) -> None:
    if distance not in DISTANCES:
        raise SimlibError(f"distance must be one of {', '.join(DISTANCES)}, not {distance!r}")
    if margin < 0:
        raise SimlibError(f"the triplet margin must be >= 0, not {margin}")


def _normalize(x):
    return ops.normalize(ops.convert_to_tensor(x, dtype="float32"), axis=-1, order=2, epsilon=1e-12)


def _distance_from_squared(sq, distance: str):
    sq = ops.maximum(sq, 0.0)
    # The floor keeps the gradient of sqrt finite at zero distance (an image and its copy).
    return sq if distance == "squared" else ops.sqrt(ops.maximum(sq, 1e-12))


def pairwise_distances(embeddings, distance: str = "euclidean"):
    """(B, B) distances between the L2-normalised rows of ``embeddings``."""
    e = _normalize(embeddings)
    # Differences rather than 2 - 2 cos: exact zeros for duplicates, no float32 cancellation.
    sq = ops.sum(ops.square(e[:, None, :] - e[None, :, :]), axis=-1)
    return _distance_from_squared(sq, distance)


def triplet_loss(anchor, positive, negative, margin: float = DEFAULT_MARGIN, distance: str = "euclidean"):
    """Per-triplet loss for given (anchor, positive, negative) rows.

    Args:
        anchor: (B, d) embeddings.
        positive: (B, d) embeddings of images similar to the anchors.
        negative: (B, d) embeddings of images unlike the anchors.
        margin: how much closer the positive must be than the negative.
        distance: "euclidean" or "squared" (Euclidean distance on the unit sphere, or its square).

    Returns:
        (B,) losses ``max(d(a, p) - d(a, n) + margin, 0)``.
    """
    _check(margin, distance)
    a, p, n = _normalize(anchor), _normalize(positive), _normalize(negative)
    d_ap = _distance_from_squared(ops.sum(ops.square(a - p), axis=-1), distance)
    d_an = _distance_from_squared(ops.sum(ops.square(a - n), axis=-1), distance)
    return ops.relu(d_ap - d_an + margin)


def _masks(labels):
    labels = ops.reshape(ops.convert_to_tensor(labels), (-1,))
    same = ops.equal(labels[:, None], labels[None, :])
    eye = ops.cast(ops.eye(ops.shape(labels)[0]), "bool")
    positive = ops.logical_and(same, ops.logical_not(eye))
    negative = ops.logical_not(same)
    return ops.cast(positive, "float32"), ops.cast(negative, "float32")


def _masked_mean(values, mask):
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


def batch_all_triplet_loss(labels, embeddings, margin: float = DEFAULT_MARGIN, distance: str = "euclidean"):
    """Mean loss over the active triplets of a batch (those with a loss above zero).

    Every (i, j, k) with ``labels[i] == labels[j]``, ``i != j`` and ``labels[k] != labels[i]`` is a
    triplet; averaging over the active ones only keeps the signal from fading as easy
    triplets multiply. Returns 0 when no triplet is active.

    Args:
        labels: (B,) integer class (or image) ids.
        embeddings: (B, d) embeddings.
        margin: triplet margin.
        distance: "euclidean" or "squared".
    """
    _check(margin, distance)
    d = pairwise_distances(embeddings, distance)
    pos, neg = _masks(labels)
    losses = ops.relu(d[:, :, None] - d[:, None, :] + margin) * pos[:, :, None] * neg[:, None, :]
    active = ops.cast(losses > 1e-16, "float32")
    return ops.sum(losses) / ops.maximum(ops.sum(active), 1.0)


def batch_hard_triplet_loss(labels, embeddings, margin: float = DEFAULT_MARGIN, distance: str = "euclidean"):
    """Mean over anchors of ``max(farthest positive - closest negative + margin, 0)``.

    Anchors without a positive or without a negative in the batch are left out.
    """
    _check(margin, distance)
    d = pairwise_distances(embeddings, distance)
    pos, neg = _masks(labels)
    hardest_pos = ops.max(d * pos, axis=1)
    hardest_neg = ops.min(d + _FAR * (1.0 - neg), axis=1)
    valid = ops.cast(ops.logical_and(ops.max(pos, axis=1) > 0, ops.max(neg, axis=1) > 0), "float32")
    return _masked_mean(ops.relu(hardest_pos - hardest_neg + margin), valid)


def semi_hard_triplet_loss(labels, embeddings, margin: float = DEFAULT_MARGIN, distance: str = "euclidean"):
    """Mean over anchor-positive pairs of the loss against their semi-hard negative.

    For the pair (i, j) the negative is the closest k with ``d(i, k) > d(i, j)``; when no
    negative is that far, the farthest negative. Pairs whose anchor has no negative are left out.
    """
    _check(margin, distance)
    d = pairwise_distances(embeddings, distance)
    pos, neg = _masks(labels)
    d_ap = d[:, :, None]  # (i, j, 1)
    d_an = d[:, None, :]  # (i, 1, k)
    farther = ops.cast(d_an > d_ap, "float32") * neg[:, None, :]  # (i, j, k)
    semi = ops.min(d_an + _FAR * (1.0 - farther), axis=2)
    has_semi = ops.max(farther, axis=2) > 0
    easiest = ops.max(d * neg, axis=1)[:, None]
    chosen = ops.where(has_semi, semi, easiest)
    valid = pos * ops.cast(ops.max(neg, axis=1) > 0, "float32")[:, None]
    return _masked_mean(ops.relu(d - chosen + margin), valid)


_MINERS = {"all": batch_all_triplet_loss, "hard": batch_hard_triplet_loss, "semihard": semi_hard_triplet_loss}


def mined_triplet_loss(
    labels, embeddings, mining: str = "hard", margin: float = DEFAULT_MARGIN, distance: str = "euclidean"
):
    """The batch triplet loss with the named mining: "all", "hard" or "semihard"."""
    if mining not in _MINERS:
        raise SimlibError(f"mining must be one of {', '.join(MINING)}, not {mining!r}")
    return _MINERS[mining](labels, embeddings, margin=margin, distance=distance)


# ----------------------------------------------------------------------------- Keras classes


@keras.saving.register_keras_serializable(package="simlib")
class TripletLoss(keras.losses.Loss):
    """Offline triplets: ``y_pred`` is (B, 3, d) = (anchor, positive, negative); ``y_true`` is unused."""

    def __init__(self, margin=DEFAULT_MARGIN, distance="euclidean", name="triplet_loss", **kwargs):
        _check(margin, distance)
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)
        self.distance = distance

    def call(self, y_true, y_pred):
        return triplet_loss(y_pred[:, 0], y_pred[:, 1], y_pred[:, 2], self.margin, self.distance)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "distance": self.distance}


@keras.saving.register_keras_serializable(package="simlib")
class BatchTripletLoss(keras.losses.Loss):
    """Online mining in a labelled batch: ``y_true`` (B,) ids, ``y_pred`` (B, d) embeddings.

    Args:
        mining: "all", "hard" or "semihard".
        margin: triplet margin.
        distance: "euclidean" or "squared".
    """

    def __init__(self, mining="hard", margin=DEFAULT_MARGIN, distance="euclidean", name=None, **kwargs):
        _check(margin, distance)
        if mining not in MINING:
            raise SimlibError(f"mining must be one of {', '.join(MINING)}, not {mining!r}")
        super().__init__(name=name or f"batch_{mining}_triplet_loss", **kwargs)
        self.mining = mining
        self.margin = float(margin)
        self.distance = distance

    def call(self, y_true, y_pred):
        return mined_triplet_loss(y_true, y_pred, self.mining, self.margin, self.distance)

    def get_config(self):
        return {**super().get_config(), "mining": self.mining, "margin": self.margin, "distance": self.distance}


@keras.saving.register_keras_serializable(package="simlib")
class FeedbackTripletLoss(BatchTripletLoss):
    """A mined batch followed by ``n_feedback`` offline triplets: batch loss + weight × triplet loss.

    ``y_pred`` is (B + 3F, d): the labelled batch's embeddings, then F anchors, F positives and
    F negatives (user feedback); ``y_true`` is (B + 3F,), only its first B ids are read.

    Args:
        n_feedback: F, the offline triplets at the end of each batch.
        weight: weight of their mean triplet loss.
        mining, margin, distance: as for :class:`BatchTripletLoss` (the margin serves both parts).
    """

    def __init__(self, n_feedback=8, weight=1.0, mining="hard", margin=DEFAULT_MARGIN, distance="euclidean", **kw):
        kw.setdefault("name", f"batch_{mining}_feedback_triplet_loss")
        super().__init__(mining=mining, margin=margin, distance=distance, **kw)
        self.n_feedback = int(n_feedback)
        self.weight = float(weight)

    def call(self, y_true, y_pred):
        f = self.n_feedback
        batch = mined_triplet_loss(y_true[: -3 * f], y_pred[: -3 * f], self.mining, self.margin, self.distance)
        a, p, n = y_pred[-3 * f : -2 * f], y_pred[-2 * f : -f], y_pred[-f:]
        offline = triplet_loss(a, p, n, self.margin, self.distance)
        return ops.mean(batch) + self.weight * ops.mean(offline)

    def get_config(self):
        return {**super().get_config(), "n_feedback": self.n_feedback, "weight": self.weight}
