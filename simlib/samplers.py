"""Batch samplers and augmentation: moved to :mod:`simlib.train.samplers`; this name stays for the course."""

from simlib.train.samplers import (  # noqa: F401
    AugmentConfig,
    Augmenter,
    jpeg_reencode,
    label_codes,
    pk_batches,
    triplet_images,
    triplet_indices,
)
