"""Triplet losses and miners against brute-force nested loops over every triplet (numpy)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from simlib.errors import SimlibError
from simlib.train import losses

MARGIN = 0.3


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _dist(a: np.ndarray, b: np.ndarray, distance: str) -> float:
    sq = float(np.sum((_unit(a) - _unit(b)) ** 2))
    return sq if distance == "squared" else np.sqrt(sq)


def _batch(seed: int, n: int = 12, d: int = 5, classes: int = 3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    # a few coincident embeddings make ties and zero distances part of every check
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb[1] = emb[0]
    return labels, emb


def ref_offline(a, p, n, margin, distance):
    rows = [max(_dist(a[i], p[i], distance) - _dist(a[i], n[i], distance) + margin, 0.0) for i in range(len(a))]
    return np.array(rows)


def ref_batch_all(labels, emb, margin, distance):
    total, active = 0.0, 0
    for i, j, k in itertools.product(range(len(labels)), repeat=3):
        if i != j and labels[i] == labels[j] and labels[k] != labels[i]:
            loss = max(_dist(emb[i], emb[j], distance) - _dist(emb[i], emb[k], distance) + margin, 0.0)
            total += loss
            active += loss > 1e-6
    return total / max(active, 1)


def ref_batch_hard(labels, emb, margin, distance):
    per_anchor = []
    for i in range(len(labels)):
        pos = [_dist(emb[i], emb[j], distance) for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        neg = [_dist(emb[i], emb[k], distance) for k in range(len(labels)) if labels[k] != labels[i]]
        if pos and neg:
            per_anchor.append(max(max(pos) - min(neg) + margin, 0.0))
    return float(np.mean(per_anchor)) if per_anchor else 0.0


def ref_semi_hard(labels, emb, margin, distance):
    per_pair = []
    for i, j in itertools.product(range(len(labels)), repeat=2):
        if i == j or labels[i] != labels[j]:
            continue
        negs = [_dist(emb[i], emb[k], distance) for k in range(len(labels)) if labels[k] != labels[i]]
        if not negs:
            continue
        d_ap = _dist(emb[i], emb[j], distance)
        farther = [dn for dn in negs if dn > d_ap]
        d_an = min(farther) if farther else max(negs)
        per_pair.append(max(d_ap - d_an + margin, 0.0))
    return float(np.mean(per_pair)) if per_pair else 0.0


@pytest.mark.parametrize("distance", ["euclidean", "squared"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_offline_triplet_loss_matches_brute_force(seed, distance):
    rng = np.random.default_rng(seed)
    a, p, n = (rng.normal(size=(7, 4)).astype(np.float32) for _ in range(3))
    got = np.asarray(losses.triplet_loss(a, p, n, MARGIN, distance))
    np.testing.assert_allclose(got, ref_offline(a, p, n, MARGIN, distance), atol=1e-5)


@pytest.mark.parametrize(
    ("mining", "reference"),
    [("all", ref_batch_all), ("hard", ref_batch_hard), ("semihard", ref_semi_hard)],
)
@pytest.mark.parametrize("distance", ["euclidean", "squared"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_batch_losses_match_brute_force(mining, reference, distance, seed):
    labels, emb = _batch(seed)
    got = float(losses.mined_triplet_loss(labels, emb, mining, MARGIN, distance))
    assert got == pytest.approx(reference(labels, emb, MARGIN, distance), abs=1e-5)


@pytest.mark.parametrize("mining", losses.MINING)
def test_batch_losses_edge_cases(mining):
    # a single class has no negatives, all-distinct labels no positives: nothing to learn, loss 0
    emb = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    assert float(losses.mined_triplet_loss(np.zeros(6), emb, mining)) == 0.0
    assert float(losses.mined_triplet_loss(np.arange(6), emb, mining)) == 0.0
    # perfectly separated classes cost nothing; one collapsed point costs exactly the margin
    sep = np.repeat(np.eye(3, 4, dtype=np.float32), 2, axis=0)
    labels = np.repeat(np.arange(3), 2)
    assert float(losses.mined_triplet_loss(labels, sep, mining, margin=0.2)) == pytest.approx(0.0, abs=1e-6)
    collapsed = np.ones((6, 4), np.float32)
    assert float(losses.mined_triplet_loss(labels, collapsed, mining, margin=0.2)) == pytest.approx(0.2, abs=1e-4)


def test_keras_loss_classes_round_trip_and_agree_with_functions():
    import keras

    labels, emb = _batch(5)
    for mining in losses.MINING:
        loss = losses.BatchTripletLoss(mining=mining, margin=MARGIN)
        clone = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
        assert float(clone(labels, emb)) == pytest.approx(float(losses.mined_triplet_loss(labels, emb, mining, MARGIN)))
    rng = np.random.default_rng(1)
    stacked = rng.normal(size=(5, 3, 4)).astype(np.float32)
    offline = losses.TripletLoss(margin=MARGIN)
    clone = keras.losses.deserialize(keras.losses.serialize(offline))
    expected = ref_offline(stacked[:, 0], stacked[:, 1], stacked[:, 2], MARGIN, "euclidean").mean()
    assert float(clone(np.zeros(5), stacked)) == pytest.approx(expected, abs=1e-5)


def test_gradients_are_finite_with_duplicate_embeddings():
    import tensorflow as tf

    labels, emb = _batch(0)
    x = tf.Variable(emb)
    for mining in losses.MINING:
        with tf.GradientTape() as tape:
            value = losses.mined_triplet_loss(labels, x, mining)
        assert np.isfinite(tape.gradient(value, x).numpy()).all()


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(SimlibError, match="mining"):
        losses.mined_triplet_loss([0, 1], np.ones((2, 2)), "hardest")
    with pytest.raises(SimlibError, match="margin"):
        losses.BatchTripletLoss(margin=-1)
    with pytest.raises(SimlibError, match="distance"):
        losses.triplet_loss(np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2)), distance="cosine")
