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


# readable names for the keys of a training history
HISTORY_NAMES = {
    "loss": "triplet loss",
    "val_recall@1": "held-out images of the classes trained on",
    "val_unseen_recall@1": "classes held out of training",
    "probe_mean_cosine": "mean cosine of a probe batch",
    "probe_spread": "spread of the probe batch",
}


def plot_history(
    history: Mapping[str, Sequence[float]],
    *,
    best_epoch: int | None = None,
    before: Mapping[str, float] | None = None,
    mode: str = "labels",
):
    """Training curves: loss, validation Recall@1 and the collapse monitor, per epoch.

    Args:
        history: ``TrainResult.history`` (or the columns of ``history.csv``).
        best_epoch: the kept epoch, marked on every panel.
        before: validation values before the first step (``training.json``'s ``val_recall@1_before``,
            ``val_unseen_recall@1_before``), drawn at epoch 0.
        mode: "self" names the validation what it is there: near-duplicate retrieval.
    """
    import matplotlib.pyplot as plt

    from simlib.train.callbacks import COLLAPSE_COSINE, COLLAPSE_SPREAD

    epochs = history.get("epoch") or list(range(1, len(next(iter(history.values()), [])) + 1))
    names = dict(HISTORY_NAMES)
    val_title = "validation Recall@1"
    if mode == "self":
        names["val_recall@1"] = "an augmented copy finds its original"
        val_title = "validation: near-duplicate Recall@1"
    panels = [
        ("triplet loss (training batches)", ["loss"]),
        (val_title, ["val_recall@1", "val_unseen_recall@1"]),
        ("collapse monitor (probe batch)", ["probe_mean_cosine", "probe_spread"]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            if key not in history:
                continue
            (line,) = ax.plot(epochs, history[key], marker=".", label=names.get(key, key))
            if before and f"{key}_before" in before:
                ax.plot([0], [before[f"{key}_before"]], marker="o", mfc="none", color=line.get_color(), ls="none")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"kept epoch ({best_epoch})")
        if keys[0] == "probe_mean_cosine":
            ax.axhline(COLLAPSE_COSINE, color="tab:red", ls=":", lw=1, label=f"collapsed: cosine > {COLLAPSE_COSINE}")
            ax.axhline(
                COLLAPSE_SPREAD, color="tab:purple", ls=":", lw=1, label=f"collapsed: spread < {COLLAPSE_SPREAD}"
            )
        if before and keys[0] == "val_recall@1":
            ax.plot([], [], marker="o", mfc="none", color="black", ls="none", label="before training (epoch 0)")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _group(r: Mapping[str, Any]) -> str:
    part = r.get("part", "all")
    return r["split"] if part == "all" else f"{r['split']}\n{part} classes"


def plot_comparison(rows: Sequence[Mapping[str, Any]], metric: str = "recall@1"):
    """The before/after table as grouped bars: one group per split (and seen / unseen part), one bar per
    method. Bars of different groups are not comparable (each part's images query each other): see
    :func:`plot_differences` for the intervals of the differences within a group."""
    import matplotlib.pyplot as plt

    splits = list(dict.fromkeys(_group(r) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(2.4 * len(splits) + 2, 3.6))
    for j, method in enumerate(methods):
        values = [next((r[metric] for r in rows if _group(r) == s and r["method"] == method), np.nan) for s in splits]
        bars = ax.bar(np.arange(len(splits)) + j * width, values, width, label=method)
        ax.bar_label(bars, fmt="%.2f", fontsize=6)
    ax.set_xticks(np.arange(len(splits)) + width * (len(methods) - 1) / 2, splits)
    label = {"recall@1": "Recall@1", "map@r": "mAP@R"}.get(metric, metric)
    ax.set_ylabel(label)
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{label} on held-out test images (compare bars within a group only)")
    fig.tight_layout()
    return fig


def plot_differences(differences: Sequence[Any], reference: str = "trained", metric: str = "recall@1"):
    """``reference`` minus each other method, per split and part, with its 95 % interval: a dot and a
    bar per comparison, green when the interval is above 0 ("beats"), red below ("worse"), grey when it
    holds 0 ("no detectable difference").

    Args:
        differences: :class:`~simlib.evaluation.stats.PairedDifference` objects or their dicts.
        reference: the method the differences are taken from (pairs the other way round are turned).
        metric: "recall@1" or "map@r".
    """
    import matplotlib.pyplot as plt

    from simlib.evaluation.stats import verdict

    items = []
    for d in differences:
        d = d if isinstance(d, Mapping) else d.to_dict()
        if d["metric"] != metric or reference not in (d["a"], d["b"]):
            continue
        sign, other = (1, d["b"]) if d["a"] == reference else (-1, d["a"])
        low, high = sorted((sign * d["low"], sign * d["high"]))
        items.append((f"{_group(d).replace(chr(10), ' ')}: vs {other}", sign * d["difference"], low, high))
    colours = {"beats": "tab:green", "worse": "tab:red", "no detectable difference": "grey"}
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(items) + 1.4))
    for y, (_name, diff, low, high) in enumerate(items[::-1]):
        colour = colours[verdict(low, high)]
        ax.plot([100 * low, 100 * high], [y, y], color=colour, lw=3, alpha=0.6)
        ax.plot([100 * diff], [y], "o", color=colour)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(items)), [i[0] for i in items[::-1]], fontsize=7)
    label = {"recall@1": "Recall@1", "map@r": "mAP@R"}.get(metric, metric)
    ax.set_xlabel(f"{reference} minus the other method, {label} in points, with its 95 % interval")
    ax.set_title(
        f"What {reference} changes, on the same queries\n(green: beats, red: worse, grey: no detectable difference)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
