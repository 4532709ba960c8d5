"""What a triplet network trains on: P×K class-balanced batches, augmented views, explicit triplets.

- :func:`pk_batches`: P classes × K images per batch, so every batch holds positives and
  negatives for online mining (:mod:`simlib.train.losses`).
- :class:`Augmenter`: label-free training. Two random augmentations of one image (crop, flip,
  colour jitter, small rotation, blur, JPEG re-encode) are a positive pair; the other images
  in the batch are its negatives. Labels are then image ids, and :func:`pk_batches` over those
  ids gives P images × K views.
- :func:`triplet_indices` / :func:`triplet_images`: explicit (anchor, positive, negative)
  triplets for teaching and for triplets that come from elsewhere (user feedback).

Every random function takes a seed and gives the same result for the same seed.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

import numpy as np

from simlib.errors import SimlibError


def label_codes(labels: Sequence | np.ndarray) -> np.ndarray:
    """Labels of any type as int64 codes 0..C-1 (stable: the sorted unique values as strings)."""
    _, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def pk_batches(labels: Sequence | np.ndarray, p: int, k: int, n_batches: int, seed: int = 0) -> np.ndarray:
    """Row indices of ``n_batches`` class-balanced batches of ``p`` classes × ``k`` rows.

    Only classes with at least two rows take part (a class of one has no positive). Within a
    batch the ``p`` classes are distinct; a class with fewer than ``k`` rows contributes all
    of its rows and repeats some to fill its ``k`` slots.

    Args:
        labels: (N,) class of each row (any hashable values; image ids in label-free mode).
        p: classes per batch.
        k: rows per class.
        n_batches: how many batches.
        seed: the batches depend only on this seed and the labels.

    Returns:
        int64 array (n_batches, p * k), grouped by class: rows ``[c*k:(c+1)*k]`` share a label.
    """
    if p < 2 or k < 2:
        raise SimlibError(f"a P×K batch needs at least 2 classes and 2 images per class, not P={p} K={k}")
    codes = label_codes(labels)
    members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1 if len(codes) else 0)]
    members = [m for m in members if len(m) >= 2]
    if len(members) < p:
        raise SimlibError(
            f"P×K sampling needs {p} classes with at least 2 images each; the data has {len(members)}: "
            "lower P (--classes-per-batch) or add images"
        )
    rng = np.random.default_rng(seed)
    out = np.empty((n_batches, p * k), np.int64)
    for b in range(n_batches):
        for slot, c in enumerate(rng.choice(len(members), size=p, replace=False)):
            rows = members[c]
            if len(rows) >= k:
                pick = rng.choice(rows, size=k, replace=False)
            else:
                pick = np.concatenate([rng.permutation(rows), rng.choice(rows, size=k - len(rows))])
            out[b, slot * k : (slot + 1) * k] = pick
    return out


def triplet_indices(labels: Sequence | np.ndarray | None, n: int, seed: int = 0, size: int | None = None) -> np.ndarray:
    """Explicit (anchor, positive, negative) row triplets.

    Args:
        labels: (N,) classes: the positive is another row of the anchor's class and the negative a
            row of another class. None (label-free): the positive is the anchor itself (to be
            augmented into a different view, see :func:`triplet_images`) and the negative any
            other row.
        n: number of triplets.
        seed: random seed.
        size: number of rows when ``labels`` is None.

    Returns:
        int64 (n, 3) rows; the negative never equals the anchor, nor shares its label.
    """
    rng = np.random.default_rng(seed)
    if labels is None:
        if size is None or size < 2:
            raise SimlibError("label-free triplets need at least 2 images")
        anchors = rng.integers(0, size, n)
        # shifting by 1..size-1 (mod size) can never land on the anchor itself
        negatives = (anchors + rng.integers(1, size, n)) % size
        return np.stack([anchors, anchors, negatives], axis=1).astype(np.int64)
    codes = label_codes(labels)
    members = {c: np.flatnonzero(codes == c) for c in np.unique(codes)}
    anchors_ok = np.flatnonzero([len(members[c]) >= 2 for c in codes])
    if len(members) < 2 or len(anchors_ok) == 0:
        raise SimlibError("triplets need at least 2 classes and one class with at least 2 images")
    out = np.empty((n, 3), np.int64)
    for i in range(n):
        a = int(rng.choice(anchors_ok))
        same = members[codes[a]]
        pos = int(rng.choice(same[same != a]))
        others = np.flatnonzero(codes != codes[a])
        out[i] = (a, pos, int(rng.choice(others)))
    return out


# ----------------------------------------------------------------------------- augmentation
@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """How strongly a label-free view differs from its source image.

    Attributes:
        crop: largest fraction of the side cut away by a random zoom-in crop.
        flip: mirror left-right with probability 1/2.
        rotation: largest rotation as a fraction of a full turn (0.04 = about 15 degrees).
        jitter: brightness / contrast / saturation change (hue moves by a quarter of it).
        blur: largest Gaussian blur sigma in pixels at 64 px (scaled with the image).
        jpeg: probability of a JPEG re-encode at a random quality in ``jpeg_quality``.
        jpeg_quality: (low, high) JPEG quality range.
    """

    crop: float = 0.25
    flip: bool = True
    rotation: float = 0.04
    jitter: float = 0.3
    blur: float = 1.0
    jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 90)


class Augmenter:
    """Seeded random views of uint8 image batches, from Keras preprocessing layers.

    ``Augmenter(size, seed)(images)`` returns a new uint8 batch of the same shape; two
    augmenters with the same seed give the same views for the same sequence of batches.
    Geometric changes fill with white (catalogue photos have white backgrounds).
    """

    def __init__(self, image_size: int, seed: int = 0, config: AugmentConfig | None = None) -> None:
        import keras

        cfg = config or AugmentConfig()
        self.config = cfg
        self.image_size = image_size
        self._rng = np.random.default_rng(seed)
        white = {"fill_mode": "constant", "fill_value": 255.0}
        layers = [keras.layers.RandomZoom((-cfg.crop, 0.0), seed=seed, **white)] if cfg.crop > 0 else []
        if cfg.flip:
            layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 1))
        if cfg.rotation > 0:
            layers.append(keras.layers.RandomRotation(cfg.rotation, seed=seed + 2, **white))
        if cfg.jitter > 0:
            layers.append(
                keras.layers.RandomColorJitter(
                    value_range=(0, 255),
                    brightness_factor=cfg.jitter,
                    contrast_factor=cfg.jitter,
                    saturation_factor=(0.5 - cfg.jitter / 2, 0.5 + cfg.jitter / 2),
                    hue_factor=cfg.jitter / 4,
                    seed=seed + 3,
                )
            )
        if cfg.blur > 0:
            sigma = cfg.blur * image_size / 64
            layers.append(
                keras.layers.RandomGaussianBlur(
                    factor=1.0, kernel_size=3, sigma=(0.01, max(sigma, 0.02)), value_range=(0, 255), seed=seed + 4
                )
            )
        self._layers = keras.Sequential(layers, name="augment")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Augment a uint8 (B, S, S, 3) batch; returns uint8 of the same shape."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise SimlibError(f"augmentation takes a (B, S, S, 3) image batch, not {images.shape}")
        if len(images) == 0:
            return images.astype(np.uint8)
        out = np.asarray(self._layers(images.astype(np.float32), training=True))
        out = np.clip(np.round(out), 0, 255).astype(np.uint8)
        lo, hi = self.config.jpeg_quality
        for i in range(len(out)):
            if self._rng.random() < self.config.jpeg:
                out[i] = jpeg_reencode(out[i], int(self._rng.integers(lo, hi + 1)))
        return out


def jpeg_reencode(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode a uint8 RGB image as JPEG at ``quality`` and decode it again (compression artefacts)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)


def triplet_images(
    table,
    n: int,
    image_size: int = 64,
    seed: int = 0,
    labels: bool | None = None,
    augment: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Explicit triplets as images, to look at (``simlib.viz.image_grid``) or train on offline.

    Args:
        table: an :class:`~simlib.data.ImageTable`.
        n: number of triplets.
        image_size: side in pixels.
        seed: random seed.
        labels: use the table's labels (default: when it has them); False gives label-free
            triplets whose positive is an augmented copy of the anchor.
        augment: augmentation strength for label-free positives.

    Returns:
        ``(images, rows)``: uint8 (n, 3, S, S, 3) anchor/positive/negative images and their
        (n, 3) table rows.
    """
    from simlib.data import prepare_image

    use_labels = table.has_labels if labels is None else labels
    if use_labels and not table.has_labels:
        raise SimlibError(f"{table.name} has no labels: use label-free triplets (labels=False)")
    rows = triplet_indices(table.labels if use_labels else None, n, seed, size=len(table))
    images = np.stack(
        [np.stack([prepare_image(table.source(int(r)), image_size) for r in triplet]) for triplet in rows]
    )
    if not use_labels:
        images[:, 1] = Augmenter(image_size, seed, augment)(images[:, 1])
    return images, rows
