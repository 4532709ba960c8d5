"""The Keras callbacks of a training run: validation and model selection, collapse monitor, time budget, history."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import keras
import numpy as np

from simlib.errors import SimlibError

# A probe batch whose embeddings have a mean pairwise cosine above this, or whose spread
# (per-dimension std × sqrt(d); about 1 for well spread unit vectors) is below COLLAPSE_SPREAD,
# has collapsed: every image maps to nearly the same point and the triplet loss sits at the margin.
COLLAPSE_COSINE = 0.9
COLLAPSE_SPREAD = 0.2
# The log key model selection and early stopping read.
SCORE_KEY = "val_score"


def collapse_stats(embeddings: np.ndarray) -> dict[str, float]:
    """How spread out a batch of embeddings is.

    Returns:
        ``mean_cosine``: mean cosine similarity over distinct pairs (1.0 = all the same point);
        ``spread``: mean per-dimension standard deviation × sqrt(d) (about 1 for unit vectors
        spread evenly over the sphere, 0 when collapsed).
    """
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    n, d = e.shape
    if n < 2:
        raise SimlibError("the collapse monitor needs at least 2 probe images")
    s = e.sum(axis=0)
    mean_cos = (float(s @ s) - n) / (n * (n - 1))
    return {"mean_cosine": mean_cos, "spread": float(e.std(axis=0).mean() * math.sqrt(d))}


def is_collapsed(stats: dict[str, float]) -> bool:
    """True when :func:`collapse_stats` shows the embeddings collapsed to (nearly) one point."""
    return stats["mean_cosine"] > COLLAPSE_COSINE or stats["spread"] < COLLAPSE_SPREAD


class CollapseMonitor(keras.callbacks.Callback):
    """Logs the probe batch's mean cosine and spread each epoch; warns when they collapse."""

    def __init__(self, embed: Callable[[], np.ndarray]) -> None:
        super().__init__()
        self.embed = embed
        self.collapsed_epochs: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        stats = collapse_stats(self.embed())
        collapsed = is_collapsed(stats)
        if logs is not None:
            logs["probe_mean_cosine"] = stats["mean_cosine"]
            logs["probe_spread"] = stats["spread"]
            logs["collapsed"] = float(collapsed)
        if collapsed:
            self.collapsed_epochs.append(epoch + 1)
            warnings.warn(
                f"epoch {epoch + 1}: embeddings are collapsing (probe mean cosine "
                f"{stats['mean_cosine']:.3f}, spread {stats['spread']:.3f}); the loss sitting at the margin "
                "means every image maps to the same point. Lower the learning rate, "
                "or try --mining semihard or all.",
                RuntimeWarning,
                stacklevel=2,
            )


class BestRecall(keras.callbacks.Callback):
    """Validation each epoch; keeps the weights of the best ``val_score`` in memory and restores them at the end.

    Args:
        evaluate: returns the epoch's validation logs (e.g. ``val_recall@1``,
            ``val_unseen_recall@1``), including :data:`SCORE_KEY`, the value selection maximises.
        on_best: called after each new best epoch (e.g. to save a checkpoint).
    """

    def __init__(self, evaluate: Callable[[], dict[str, float]], on_best: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.evaluate = evaluate
        self.on_best = on_best
        self.best = -math.inf
        self.best_epoch = 0
        self.best_logs: dict[str, float] = {}
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        values = {key: float(v) for key, v in self.evaluate().items()}
        if logs is not None:
            logs.update(values)
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if values[SCORE_KEY] > self.best:
            self.best, self.best_epoch, self.best_logs = values[SCORE_KEY], epoch + 1, values
            self.best_weights = self.model.get_weights()
            if self.on_best is not None:
                self.on_best()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class TimeBudget(keras.callbacks.Callback):
    """Stops training (after the current batch) once ``seconds`` have passed since ``start``."""

    def __init__(self, seconds: float, start: float) -> None:
        super().__init__()
        self.deadline = start + seconds
        self.hit = False

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() > self.deadline:
            self.hit = True
            self.model.stop_training = True


class History(keras.callbacks.Callback):
    """Every epoch's logs (after the callbacks above have added theirs)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})

    def as_lists(self) -> dict[str, list[float]]:
        """Per-key lists over the epochs (NaN where an epoch lacks a key)."""
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        return {key: [row.get(key, float("nan")) for row in self.rows] for key in keys}


class EpochProgress(keras.callbacks.Callback):
    """One progress bar over a run's epochs, with the validation Recall@1 as it goes: what a notebook
    shows instead of Keras' per-step bar (``fit(..., progress=False, callbacks=[EpochProgress(n)])``)."""

    def __init__(self, epochs: int, desc: str = "training") -> None:
        super().__init__()
        self.epochs, self.desc, self.bar = epochs, desc, None

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.epochs, desc=self.desc, unit="epoch")

    def on_epoch_end(self, epoch, logs=None):
        names = {"val_recall@1": "val R@1", "val_unseen_recall@1": "unseen R@1"}
        self.bar.set_postfix({short: f"{logs[k]:.3f}" for k, short in names.items() if k in (logs or {})})
        self.bar.update(1)

    def on_train_end(self, logs=None):
        done = self.bar.n
        if done < self.epochs:  # early stopping or the time budget: a finished run, not a failed one
            # tqdm draws a bar closed short of its total as an error (red in a notebook)
            self.bar.total = done
            container = getattr(self.bar, "container", None)
            if container is not None:  # the notebook widget took its length from the old total
                container.children[1].max = done
            self.bar.set_description(f"{self.desc} (stopped after epoch {done} of {self.epochs})")
        self.bar.close()
