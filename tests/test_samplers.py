"""Sampler invariants: P×K composition, negatives never the anchor, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest

from simlib.errors import SimlibError
from simlib.train.samplers import AugmentConfig, Augmenter, jpeg_reencode, pk_batches, triplet_images, triplet_indices


def _labels(seed: int = 0) -> np.ndarray:
    # uneven classes, one too small to be sampled (a single image has no positive)
    sizes = {"shirt": 9, "shoe": 5, "bag": 3, "cap": 2, "watch": 1, "belt": 7}
    labels = np.asarray([c for c, n in sizes.items() for _ in range(n)], dtype=object)
    return labels[np.random.default_rng(seed).permutation(len(labels))]


@pytest.mark.parametrize(("p", "k"), [(2, 2), (3, 4), (5, 3)])
def test_pk_batches_hold_p_classes_of_k_rows(p, k):
    labels = _labels()
    batches = pk_batches(labels, p, k, n_batches=40, seed=1)
    assert batches.shape == (40, p * k)
    for batch in batches:
        groups = labels[batch].reshape(p, k)
        assert all(len(set(g)) == 1 for g in groups), "each block of K rows is one class"
        assert len({g[0] for g in groups}) == p, "the P classes are distinct"
        assert "watch" not in groups, "a class of one image is never sampled"
        for g, rows in zip(groups, batch.reshape(p, k), strict=True):
            # distinct rows whenever the class is big enough, all of them otherwise
            n_class = int((labels == g[0]).sum())
            assert len(set(rows.tolist())) == min(k, n_class)


def test_pk_batches_are_seeded_and_cover_classes():
    labels = _labels()
    a = pk_batches(labels, 3, 2, 30, seed=7)
    np.testing.assert_array_equal(a, pk_batches(labels, 3, 2, 30, seed=7))
    assert not np.array_equal(a, pk_batches(labels, 3, 2, 30, seed=8))
    seen = set(labels[a.ravel()])
    assert seen == {"shirt", "shoe", "bag", "cap", "belt"}


def test_pk_batches_refuse_impossible_requests():
    with pytest.raises(SimlibError, match="classes"):
        pk_batches(_labels(), 6, 2, 1)  # only 5 classes have 2+ images
    with pytest.raises(SimlibError, match="at least 2"):
        pk_batches(_labels(), 1, 4, 1)


def test_triplet_indices_with_labels():
    labels = _labels(3)
    t = triplet_indices(labels, 300, seed=0)
    a, p, n = t.T
    assert (a != p).all() and (labels[a] == labels[p]).all()
    assert (a != n).all() and (labels[a] != labels[n]).all()
    assert "watch" not in labels[a]  # no positive exists for it
    np.testing.assert_array_equal(t, triplet_indices(labels, 300, seed=0))
    assert not np.array_equal(t, triplet_indices(labels, 300, seed=1))


def test_label_free_triplets_never_use_the_anchor_as_negative():
    t = triplet_indices(None, 2000, seed=0, size=3)
    assert (t[:, 0] == t[:, 1]).all()
    assert (t[:, 0] != t[:, 2]).all()
    assert set(t[:, 2]) == {0, 1, 2}
    with pytest.raises(SimlibError):
        triplet_indices(None, 1, size=1)


@pytest.mark.integration  # reads $SIMLIB_DATA
def test_augmenter_is_seeded_and_changes_images(small_table):
    from simlib.data import prepare_image

    images = np.stack([prepare_image(small_table.source(i), 32) for i in range(6)])
    views = Augmenter(32, seed=3)(images)
    assert views.shape == images.shape and views.dtype == np.uint8
    np.testing.assert_array_equal(views, Augmenter(32, seed=3)(images))
    assert not np.array_equal(views, Augmenter(32, seed=4)(images))
    assert all(not np.array_equal(v, x) for v, x in zip(views, images, strict=True))
    # each component alone is still a small change: the view stays close to its source
    gentle = Augmenter(32, seed=0, config=AugmentConfig(crop=0, flip=False, rotation=0, blur=0, jpeg=0, jitter=0.1))
    diff = np.abs(gentle(images).astype(int) - images.astype(int)).mean()
    assert 0 < diff < 40


def test_jpeg_reencode_changes_pixels_but_not_shape():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = jpeg_reencode(image, 20)
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)


@pytest.mark.integration  # reads $SIMLIB_DATA
def test_triplet_images_for_teaching(small_table):
    images, rows = triplet_images(small_table, 4, image_size=32, seed=0)
    assert images.shape == (4, 3, 32, 32, 3)
    labels = small_table.labels
    assert (labels[rows[:, 0]] == labels[rows[:, 1]]).all() and (labels[rows[:, 0]] != labels[rows[:, 2]]).all()
    free, free_rows = triplet_images(small_table, 4, image_size=32, seed=0, labels=False)
    assert (free_rows[:, 0] == free_rows[:, 1]).all() and (free_rows[:, 0] != free_rows[:, 2]).all()
    assert not np.array_equal(free[:, 0], free[:, 1])  # the positive is a different view
