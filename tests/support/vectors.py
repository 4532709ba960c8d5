"""Synthetic vectors and the exact references that index and search tests compare against."""

from __future__ import annotations

import numpy as np


def structured(n: int, d: int = 32, rank: int = 8, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """Low-rank plus noise unit vectors: realistic for recall tests (isotropic noise makes recall meaningless)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d)) + noise * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(x: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (``allowed``: a boolean mask of usable rows): the reference for indexes."""
    s = q @ x.T
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


def stratified_rows(labels: np.ndarray, n_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    """Rows of the ``n_classes`` largest classes, ``per_class`` each (deterministic)."""
    from simlib.data import ImageTable, sample_per_class

    table = ImageTable(ids=np.arange(len(labels)), arrays=np.zeros((len(labels), 1, 1), np.uint8), labels=labels)
    return sample_per_class(table, n_classes, per_class, seed).ids
