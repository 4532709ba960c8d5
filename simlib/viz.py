"""Plots for the course: image grids, triplets, training curves and the before/after table (matplotlib)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def image_grid(
    images: Sequence[Any] | np.ndarray,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.6,
    suptitle: str | None = None,
):
    """Show images in a grid.

    Args:
        images: uint8 arrays (H, W[, 3]), PIL images or file paths.
        titles: one short caption per image (optional).
        ncols: images per row.
        size: inches per image.
        suptitle: a title over the whole grid.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from simlib.data import open_image

    images = list(images)
    n = max(len(images), 1)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.25)), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < len(images):
            img = images[i]
            pixels = np.asarray(open_image(img)) if not isinstance(img, np.ndarray) else img.astype(np.uint8)
            # a 2-D array is greyscale: show it grey (matplotlib's default would colour it)
            if pixels.ndim == 2:
                ax.imshow(pixels, cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(pixels)
            if titles is not None and i < len(titles):
                ax.set_title(str(titles[i])[:24], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def triplet_grid(triplets: np.ndarray, labels: Sequence[Sequence[str]] | None = None, size: float = 1.6):
    """Show (anchor, positive, negative) triplets, one per row.

    Args:
        triplets: uint8 (n, 3, S, S, 3), e.g. from :func:`simlib.train.samplers.triplet_images`.
        labels: (n, 3) captions (e.g. class names), optional.
    """
    roles = ("anchor", "positive", "negative")
    n = len(triplets)
    titles = [f"{roles[j]}: {labels[i][j]}" if labels is not None else roles[j] for i in range(n) for j in range(3)]
    return image_grid(np.asarray(triplets).reshape(n * 3, *np.asarray(triplets).shape[2:]), titles, 3, size)


def plot_history(history: Mapping[str, Sequence[float]]):
    """Training curves: loss, validation Recall@1 (seen and held-out classes) and the collapse monitor, per epoch.

    Args:
        history: ``TrainResult.history`` (or the columns of ``history.csv``).
    """
    import matplotlib.pyplot as plt

    epochs = history.get("epoch") or list(range(1, len(next(iter(history.values()), [])) + 1))
    panels = [
        ("triplet loss", ["loss"]),
        ("validation Recall@1", ["val_recall@1", "val_unseen_recall@1"]),
        ("collapse monitor (probe)", ["probe_mean_cosine", "probe_spread"]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            if key in history:
                ax.plot(epochs, history[key], marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if sum(key in history for key in keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_comparison(rows: Sequence[Mapping[str, Any]], metric: str = "recall@1"):
    """The before/after table as grouped bars: one group per split (and seen / unseen part), one bar per method."""
    import matplotlib.pyplot as plt

    def group(r: Mapping[str, Any]) -> str:
        part = r.get("part", "all")
        return r["split"] if part == "all" else f"{r['split']}\n{part} classes"

    splits = list(dict.fromkeys(group(r) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(2.2 * len(splits) + 2, 3.4))
    for j, method in enumerate(methods):
        values = [next((r[metric] for r in rows if group(r) == s and r["method"] == method), np.nan) for s in splits]
        bars = ax.bar(np.arange(len(splits)) + j * width, values, width, label=method)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(np.arange(len(splits)) + width * (len(methods) - 1) / 2, splits)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(f"{metric} on held-out test images")
    fig.tight_layout()
    return fig
