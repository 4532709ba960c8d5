"""What a training run leaves beside the model: ``training.json`` and ``history.csv``, and a typed reader."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path
from typing import Any

from simlib.config import to_dict
from simlib.errors import SimlibError
from simlib.storage import load_json

HISTORY_FILE = "history.csv"
TRAINING_FILE = "training.json"


@dataclasses.dataclass(frozen=True)
class TrainingRecord:
    """A trained model's ``training.json``, typed.

    Attributes:
        train_config: the :class:`~simlib.train.TrainConfig` fields the run used.
        labels_used: False for a label-free (self mode) run: no class was seen as a class.
        classes: the labels the model trained on (None when no labels were used, or for a
            model trained before they were recorded).
        val_classes: the classes held out whole for the class-disjoint validation.
        split: how the data was split: seed, split_by, val_fraction, val_classes, test_fraction.
        select_on: the selection rule actually used ("seen", "unseen" or "mean").
        best_epoch: the kept epoch (0 when unknown).
        info: the whole file, for keys not typed here.
    """

    train_config: dict[str, Any]
    labels_used: bool
    classes: tuple[str, ...] | None
    val_classes: tuple[str, ...]
    split: dict[str, Any]
    select_on: str
    best_epoch: int
    info: dict[str, Any]

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> TrainingRecord:
        """Read ``model_dir/training.json``.

        Raises:
            SimlibError: the folder holds no training record (an untrained or imported model).
        """
        path = Path(model_dir) / TRAINING_FILE
        if not path.is_file():
            raise SimlibError(f"{model_dir} has no {TRAINING_FILE}: the model was not trained by simlib")
        info = load_json(path)
        tc = dict(info.get("train_config") or {})
        labels_used = bool(info.get("labels_used", tc.get("mode", "labels") == "labels"))
        classes = info.get("classes")
        return cls(
            train_config=tc,
            labels_used=labels_used,
            classes=None if classes is None else tuple(str(c) for c in classes),
            val_classes=tuple(str(c) for c in info.get("val_classes") or ()),
            split=dict(info.get("split") or {}),
            select_on=str(info.get("select_on", "seen")),
            best_epoch=int(info.get("best_epoch", 0)),
            info=info,
        )

    def seen(self, label: str) -> bool | None:
        """Whether the model trained on ``label`` (None when that is unknown)."""
        return None if self.classes is None else str(label) in self.classes


def save_model(embedder, out, tc, split, seconds: float, result=None, extra: dict[str, Any] | None = None) -> Path:
    """Save the embedder (as trained) with its history and training record, in one atomic write.

    Args:
        embedder: the embedder to save; one not yet marked trained (a checkpoint) is re-assembled
            with ``trained=True`` so its fingerprint covers its current weights.
        out: the model folder.
        tc: the :class:`~simlib.train.TrainConfig`.
        split: the run's :class:`~simlib.train.split.Split`.
        seconds: wall time so far.
        result: the :class:`~simlib.train.TrainResult` (None for a checkpoint during training).
        extra: more keys for ``training.json``.
    """
    from simlib.model import Embedder

    if not embedder.config.trained:  # a checkpoint during training: fingerprint its current weights
        embedder = Embedder.assemble(
            embedder.backbone, embedder.head, dataclasses.replace(embedder.config, trained=True)
        )
    labels_used = bool(split.settings["labels_used"])
    info: dict[str, Any] = {
        "train_config": to_dict(tc),
        "seconds": round(seconds, 2),
        "labels_used": labels_used,
        "classes": list(split.train_classes) if labels_used else None,
        "val_classes": list(split.unseen_classes),
        "split": dict(split.settings),
    }
    if result is not None:
        info.update(result.summary())
    info.update(extra or {})
    out = embedder.save(out, extra={TRAINING_FILE: info})
    if result is not None:
        write_history(out / HISTORY_FILE, result.history)
    return out


def write_history(path: Path, history: dict[str, list[float]]) -> None:
    """The per-epoch history as CSV (one column per key)."""
    keys = list(history)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for row in zip(*(history[k] for k in keys), strict=True):
            w.writerow([f"{v:.6g}" for v in row])
