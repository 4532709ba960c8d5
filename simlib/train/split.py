"""Which images train, which validate (seen and unseen classes), which are kept for testing.

The test split is exactly the one :func:`simlib.data.split_table` gives evaluation for the same
seed, fractions and ``split_by``; validation is carved from what is left, so it never touches a
test image:

- ``split_by="image"``: the image-disjoint ("seen") validation is ``split_table``'s val part;
  the class-disjoint ("unseen") validation is ``val_classes`` of the remaining classes, held out
  whole (their train and val images; their test images stay in the test split, where
  evaluation can tell them apart from the classes trained on with :class:`TrainingRecord`).
- ``split_by="class"``: the unseen validation is ``split_table``'s val part (classes disjoint
  from the training and test classes), and the seen validation ``val_fraction`` of each training
  class's images.
- self mode: no labels are used: ``split_table``'s image split, the val part for the
  near-duplicate validation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from simlib.data import ImageTable, split_table
from simlib.errors import SimlibError
from simlib.train.plan import TrainConfig

# Fewer training classes than this after holding some out: no class-disjoint validation.
MIN_TRAIN_CLASSES = 4


def _classes(table: ImageTable | None) -> tuple[str, ...]:
    if table is None or table.labels is None or not len(table):
        return ()
    return tuple(sorted({str(v) for v in table.labels}))


@dataclasses.dataclass(frozen=True)
class Split:
    """The tables of one training run.

    Attributes:
        train: the images trained on.
        val: the image-disjoint validation (classes of ``train``; in self mode, the
            near-duplicate validation).
        unseen: the class-disjoint validation, or None: its classes are never in ``train``, and never
            in ``test`` with ``split_by="class"`` (an image split puts every class in ``test``).
        test: kept for evaluation, never read here.
        settings: how it was drawn (seed, split_by, fractions), recorded in ``training.json``.
        note: why there is no class-disjoint validation, when there is none in labels mode.
    """

    train: ImageTable
    val: ImageTable
    unseen: ImageTable | None
    test: ImageTable
    settings: dict[str, Any]
    note: str = ""

    @property
    def train_classes(self) -> tuple[str, ...]:
        """The labels trained on (empty in self mode)."""
        return _classes(self.train)

    @property
    def unseen_classes(self) -> tuple[str, ...]:
        """The classes of the class-disjoint validation."""
        return _classes(self.unseen)

    @property
    def test_classes(self) -> tuple[str, ...]:
        """The classes of the test split."""
        return _classes(self.test)


def make_split(table: ImageTable, tc: TrainConfig) -> Split:
    """Split ``table`` for training with ``tc`` (see the module docstring)."""
    labelled = tc.labelled
    by = tc.split_by if labelled else "image"
    settings = {
        "seed": tc.seed,
        "split_by": by,
        "val_fraction": tc.val_fraction,
        "val_classes": tc.val_classes if labelled else 0.0,
        "test_fraction": tc.test_fraction,
        "labels_used": labelled,
    }
    if not labelled:
        parts = split_table(dataclasses.replace(table, labels=None), seed=tc.seed, val=tc.val_fraction,
                            test=tc.test_fraction, by="image")  # fmt: skip
        return Split(parts["train"], parts["val"], None, parts["test"], settings)
    if by == "class":
        parts = split_table(table, seed=tc.seed, val=tc.val_classes, test=tc.test_fraction, by="class")
        rest = split_table(parts["train"], seed=tc.seed, val=tc.val_fraction, test=0.0, by="image")
        train, val, unseen = rest["train"], rest["val"], parts["val"] if len(parts["val"]) else None
    else:
        parts = split_table(table, seed=tc.seed, val=tc.val_fraction, test=tc.test_fraction, by="image")
        train, val, unseen = parts["train"], parts["val"], None
        classes = np.asarray(_classes(train), dtype=object)
        n_held = max(2, round(len(classes) * tc.val_classes)) if tc.val_classes > 0 else 0
        if n_held and len(classes) - n_held >= MIN_TRAIN_CLASSES:
            rng = np.random.default_rng(tc.seed + 17)  # its own stream: the test split stays split_table's
            held = set(classes[rng.permutation(len(classes))[:n_held]].tolist())
            test_ids = set(parts["test"].ids.tolist())
            unseen = table.subset(
                [i for i, (v, id_) in enumerate(zip(table.labels, table.ids, strict=True))
                 if str(v) in held and int(id_) not in test_ids]
            )  # fmt: skip
            train, val = _without(train, held), _without(val, held)
    note = ""
    if unseen is not None and len(_classes(unseen)) < 2:
        note, unseen = "it would hold a single class", None
    elif unseen is None and labelled:
        note = "too few classes" if tc.val_classes > 0 else "val_classes=0"
    return Split(train, val, unseen, parts["test"], settings, note)


def _without(table: ImageTable, classes: set[str]) -> ImageTable:
    return table.subset(np.flatnonzero([str(v) not in classes for v in table.labels]))


def selection_score(rule: str, seen: float, unseen: float | None) -> float:
    """The value model selection maximises: ``seen``, ``unseen`` or their ``mean`` (``seen`` when
    there is no class-disjoint validation)."""
    if unseen is None or rule == "seen":
        return seen
    if rule == "unseen":
        return unseen
    if rule == "mean":
        return (seen + unseen) / 2
    raise SimlibError(f"select_on must be seen, unseen or mean, not {rule!r}")
