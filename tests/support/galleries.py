"""Image galleries on disk and the small model settings the tests build models with."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# An untrained 32 px model: fast and fully real (the ``tiny_model`` fixture).
TINY = {"image_size": 32, "embedding_dim": 32, "weights": "none", "seed": 0}
# The same with a small trainable head: what the training tests fit.
SMALL_HEAD = {"image_size": 32, "embedding_dim": 16, "weights": "none", "head_hidden": 32, "head_norm": True, "seed": 0}


def model_config(base: dict[str, Any] = TINY, **overrides: Any):
    """A ``ModelConfig`` for tests: ``base`` (``TINY`` or ``SMALL_HEAD``) with ``overrides``."""
    from simlib.config import ModelConfig

    return ModelConfig(**{**base, **overrides})


def synthetic_image(label: int, seed: int, size: tuple[int, int] = (40, 32)) -> np.ndarray:
    """A uint8 RGB image whose colour says its class and whose noise says the seed (no two are equal)."""
    rng = np.random.default_rng([label, seed])
    base = np.asarray([(label * 97) % 256, (label * 57 + 80) % 256, (label * 31 + 160) % 256], np.int16)
    img = base + rng.integers(-30, 31, (size[1], size[0], 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_items(n_classes: int, per_class: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """``(label, image)`` pairs of :func:`synthetic_image`, ``per_class`` of each of ``n_classes`` classes."""
    return [(f"class{c}", synthetic_image(c, seed * 10_000 + i)) for c in range(n_classes) for i in range(per_class)]


def table_items(table, rows: Iterable[int]) -> list[tuple[str, str]]:
    """``(label, image path)`` pairs for ``rows`` of an ``ImageTable`` (spaces in labels become ``_``)."""
    return [(str(table.labels[r]).replace(" ", "_"), table.paths[r]) for r in rows]


def labelled_folder(
    root: str | os.PathLike, items: Sequence[tuple[str, Any]], *, link: bool = False, ext: str = ".png"
) -> Path:
    """Write a class-per-sub-folder gallery (``root/<label>/<file>``), as ``load_image_folder`` reads it.

    Args:
        root: the gallery folder (created).
        items: ``(label, image)`` pairs; an image is a file path (copied, or symlinked with ``link``,
            keeping its file name) or a uint8 array (written as ``<n><ext>``).
        link: symlink files instead of copying them.
        ext: the file type for arrays (``.png`` is lossless; ``.jpg`` as a camera writes it).

    Returns:
        ``root``.
    """
    root = Path(root)
    for n, (label, image) in enumerate(items):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(image, np.ndarray):
            Image.fromarray(image).save(folder / f"{n:04d}{ext}")
            continue
        target = folder / Path(image).name
        if link:
            target.symlink_to(image)
        else:
            shutil.copy(image, target)
    return root
