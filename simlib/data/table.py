"""The one dataset type, :class:`ImageTable`, and how a table is split and sampled."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from simlib.errors import SimlibError


@dataclasses.dataclass(frozen=True)
class ImageTable:
    """A dataset: one row per image.

    Attributes:
        ids: int64 ids, unique within the table (product id, file order or array index).
        paths: file path of each image, or None when images live in ``arrays``.
        arrays: uint8 images (N, H, W) or (N, H, W, C), or None when images are files.
        labels: object array of class names, or None for a label-free dataset.
        attributes: per-row dict of extra string columns (colour, gender, ...).
        name: short description of where the data came from.
    """

    ids: np.ndarray
    paths: tuple[str, ...] | None = None
    arrays: np.ndarray | None = None
    labels: np.ndarray | None = None
    attributes: tuple[dict[str, str], ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        n = len(self.ids)
        if (self.paths is None) == (self.arrays is None):
            raise ValueError("an ImageTable holds either paths or arrays")
        sizes = [len(x) for x in (self.paths, self.arrays, self.labels) if x is not None]
        if self.attributes:
            sizes.append(len(self.attributes))
        if any(s != n for s in sizes):
            raise ValueError("every column of an ImageTable must have one entry per row")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_labels(self) -> bool:
        """True when every row has a class label."""
        return self.labels is not None

    def source(self, i: int) -> str | np.ndarray:
        """The path or array of row ``i``."""
        return self.paths[i] if self.paths is not None else self.arrays[i]  # type: ignore[index]

    def attrs(self, i: int) -> dict[str, str]:
        """The attributes of row ``i`` (empty dict when there are none)."""
        return self.attributes[i] if self.attributes else {}

    def label(self, i: int) -> str | None:
        """The label of row ``i``, or None."""
        return None if self.labels is None else str(self.labels[i])

    def subset(self, rows: Sequence[int] | np.ndarray) -> ImageTable:
        """A new table with the given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return ImageTable(
            ids=self.ids[rows],
            paths=None if self.paths is None else tuple(self.paths[i] for i in rows),
            arrays=None if self.arrays is None else self.arrays[rows],
            labels=None if self.labels is None else self.labels[rows],
            attributes=tuple(self.attributes[i] for i in rows) if self.attributes else (),
            name=self.name,
        )


def split_table(
    table: ImageTable,
    *,
    seed: int = 0,
    val: float = 0.1,
    test: float = 0.3,
    by: str = "image",
) -> dict[str, ImageTable]:
    """Deterministic train/val/test split.

    Args:
        table: the dataset.
        seed: the split depends only on this seed and the table's ids and labels.
        val: fraction for validation.
        test: fraction for test.
        by: "image" (stratified by class: every class in every split) or "class"
            (class-disjoint: test classes are never seen in training, the metric-learning protocol).

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise SimlibError(f"split fractions val={val} test={test} must be in [0, 1) and sum below 1")
    if by not in ("image", "class"):
        raise SimlibError(f"split by must be 'image' or 'class', not {by!r}")
    rng = np.random.default_rng(seed)
    labels = table.labels if table.labels is not None else np.zeros(len(table), dtype=object)
    classes = sorted(set(labels.tolist()))
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    if by == "class":
        if table.labels is None:
            raise SimlibError("a class-disjoint split needs labels; this dataset has none")
        order = rng.permutation(len(classes))
        n_test = max(1, round(len(classes) * test)) if test > 0 else 0
        n_val = max(1, round(len(classes) * val)) if val > 0 else 0
        assignment = {}
        for rank, c in enumerate(order):
            name = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            assignment[classes[c]] = name
        for i, lab in enumerate(labels):
            parts[assignment[lab]].append(i)
    else:
        for c in classes:
            rows = np.flatnonzero(labels == c)
            rows = rows[np.argsort(table.ids[rows], kind="stable")]
            rows = rows[rng.permutation(len(rows))]
            n_test = round(len(rows) * test)
            n_val = round(len(rows) * val)
            parts["test"] += rows[:n_test].tolist()
            parts["val"] += rows[n_test : n_test + n_val].tolist()
            parts["train"] += rows[n_test + n_val :].tolist()
    return {name: table.subset(sorted(rows)) for name, rows in parts.items()}


def sample_per_class(table: ImageTable, n_classes: int, per_class: int, seed: int = 0) -> ImageTable:
    """A small labelled subset: ``per_class`` random images of each of the ``n_classes`` largest classes.

    Used for quick runs (smoke tests, first steps in the course); rows keep the table's order.
    """
    if table.labels is None:
        rng = np.random.default_rng(seed)
        return table.subset(np.sort(rng.choice(len(table), min(len(table), n_classes * per_class), replace=False)))
    values, counts = np.unique(table.labels.astype(str), return_counts=True)
    chosen = values[np.argsort(-counts, kind="stable")[:n_classes]]
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    for c in sorted(chosen):
        idx = np.flatnonzero(table.labels.astype(str) == c)
        rows += rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist()
    return table.subset(np.sort(np.asarray(rows, dtype=np.int64)))
