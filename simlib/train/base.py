"""What every training strategy shares: the data it is given, validation, and the Keras loop.

A :class:`Strategy` subclass says how the trainable model, its input batches and the
validation embeddings are set up (:meth:`Strategy.prepare`, :meth:`Strategy.encode`,
:meth:`Strategy.embed`); :meth:`Strategy.run` does the rest the same way for all: learning-rate
schedule, compile, callbacks (validation and model selection, collapse monitor, early
stopping, time budget, history), restoring the best weights, the result and the saved folder.
"""

from __future__ import annotations

import abc
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np

from simlib.evaluation.metrics import evaluate, knn
from simlib.model import Embedder
from simlib.train.callbacks import SCORE_KEY, BestRecall, CollapseMonitor, History, TimeBudget
from simlib.train.feedback import add_feedback
from simlib.train.losses import BatchTripletLoss
from simlib.train.plan import TrainConfig, TrainResult
from simlib.train.record import save_model
from simlib.train.split import Split, selection_score

# Labels mode: validation queries also search up to this many training images (keeps Recall@1
# defined and stable on small folders).
MAX_TRAIN_REFS = 2000
PROBE_SIZE = 64


@dataclasses.dataclass(frozen=True)
class ValidationData:
    """The images validation embeds each epoch, with what scoring them needs.

    Attributes:
        seen: uint8 images of the image-disjoint validation (self mode: the near-duplicate
            validation's originals).
        seen_labels: their labels (None in self mode).
        ref_rows: rows of the training images that ``seen`` queries search as well (labels mode).
        ref_labels: the labels of those rows.
        unseen: uint8 images of the class-disjoint validation, or None.
        unseen_labels: their labels.
        probe: up to 64 ``seen`` images for the collapse monitor.
        queries: self mode: a fixed augmented copy of each ``seen`` image, which must find its original.
    """

    seen: np.ndarray
    seen_labels: np.ndarray | None
    probe: np.ndarray
    ref_rows: np.ndarray | None = None
    ref_labels: np.ndarray | None = None
    unseen: np.ndarray | None = None
    unseen_labels: np.ndarray | None = None
    queries: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Everything a strategy trains and validates on.

    Attributes:
        images: uint8 (N, S, S, 3) training images.
        ids: (N,) int64 group of each image: its class code (labels mode) or its row (self mode).
        p: groups per P×K batch.
        k: images (or views) per group.
        steps: batches per epoch.
        val: the validation images.
        split: the tables they came from.
    """

    images: np.ndarray
    ids: np.ndarray
    p: int
    k: int
    steps: int
    val: ValidationData
    split: Split


class Strategy(abc.ABC):
    """One way to train an embedder; subclasses set up the data and the trainable model.

    Args:
        embedder: a private copy of the embedder to train (its weights change in place).
        tc: the training plan.
        data: the training and validation images.
        say: prints a progress line (or not).
        progress: show progress bars.
    """

    name: ClassVar[str]
    # Slow runs keep their best model on disk as they go; fast ones save once at the end.
    checkpoint_each_best: ClassVar[bool] = False

    def __init__(
        self,
        embedder: Any,
        tc: TrainConfig,
        data: TrainingData,
        say: Callable[[str], None] = lambda msg: None,
        progress: bool = False,
    ) -> None:
        self.embedder = embedder
        self.tc = tc
        self.data = data
        self.say = say
        self.progress = progress
        self._inputs: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ what a strategy defines
    @abc.abstractmethod
    def prepare(self) -> tuple[Any, Any]:
        """Set trainable layers and caches; returns ``(trainable model, dataset)`` whose batches are
        ``(inputs, ids)`` for :class:`~simlib.train.losses.BatchTripletLoss`."""

    @abc.abstractmethod
    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 images in the trainable model's input form (fixed while training)."""

    def encode_train(self, rows: np.ndarray) -> np.ndarray:
        """:meth:`encode` of training images by row (a strategy with a cache reuses it)."""
        return self.encode(self.data.images[rows])

    @abc.abstractmethod
    def embed(self, inputs: np.ndarray) -> np.ndarray:
        """Embeddings of :meth:`encode` outputs with the current weights."""

    # ------------------------------------------------------------------ validation
    def _encode_validation(self) -> None:
        val = self.data.val
        parts = {"seen": val.seen, "probe": val.probe, "unseen": val.unseen, "queries": val.queries}
        self._inputs = {name: self.encode(images) for name, images in parts.items() if images is not None}
        if val.ref_rows is not None:
            self._inputs["refs"] = self.encode_train(val.ref_rows)

    def recalls(self) -> dict[str, float]:
        """This epoch's validation Recall@1: ``val_recall@1`` (image-disjoint; near-duplicate in self
        mode) and, when there is a class-disjoint validation, ``val_unseen_recall@1``."""
        val = self.data.val
        seen = self.embed(self._inputs["seen"])
        if val.seen_labels is None:  # self mode: an augmented copy must find its original
            ids = np.arange(len(seen))
            queries = self.embed(self._inputs["queries"])
            return {"val_recall@1": evaluate(queries, ids, seen, ids, ref_includes_query=False, ks=(1,))["recall@1"]}
        refs = np.concatenate([seen, self.embed(self._inputs["refs"])])
        ref_labels = np.concatenate([val.seen_labels, val.ref_labels])
        _, idx = knn(seen, refs, 2)
        own = idx[:, 0] == np.arange(len(seen))
        first = np.where(own, idx[:, 1], idx[:, 0])  # nearest reference other than the query itself
        out = {"val_recall@1": float(np.mean(ref_labels[first] == val.seen_labels))}
        if val.unseen is not None:
            out["val_unseen_recall@1"] = _loo_recall_at_1(self.embed(self._inputs["unseen"]), val.unseen_labels)
        return out

    def validate(self) -> dict[str, float]:
        """:meth:`recalls` plus ``val_score``, the value model selection maximises (``tc.select_on``)."""
        out = dict(self.recalls())
        out[SCORE_KEY] = selection_score(self.select_on, out["val_recall@1"], out.get("val_unseen_recall@1"))
        return out

    @property
    def select_on(self) -> str:
        """The selection rule in force ("seen" without a class-disjoint validation)."""
        return self.tc.select_on if self.data.val.unseen is not None else "seen"

    # ------------------------------------------------------------------ the common loop
    def run(
        self,
        *,
        out: str | Path | None = None,
        callbacks: Sequence[Any] = (),
        feedback: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        t_start: float | None = None,
    ) -> TrainResult:
        """Train, keep the best epoch's weights, and save when ``out`` is given.

        Args:
            out: model folder to save in.
            callbacks: more Keras callbacks (they see the trainable model).
            feedback: uint8 (anchor, positive, negative) images to add to every batch.
            t_start: when the run started (``perf_counter``), for the time budget and the record.
        """
        tc, data = self.tc, self.data
        t_start = time.perf_counter() if t_start is None else t_start
        trainable, dataset = self.prepare()
        self._encode_validation()
        loss = BatchTripletLoss(mining=tc.mining_used, margin=tc.margin)
        if feedback is not None:
            dataset, loss = add_feedback(dataset, tuple(self.encode(t) for t in feedback), tc, data.steps)
            self.say(
                f"feedback: {len(feedback[0])} triplets, {tc.feedback_batch} per batch, weight {tc.feedback_weight}"
            )
        self._compile(trainable, loss)
        loop = _Loop.start(self, out, t_start, callbacks)
        before = self.validate()
        self.say(self._plan_line(before))
        trainable.fit(
            dataset,
            epochs=tc.epochs,
            steps_per_epoch=data.steps,
            callbacks=loop.callbacks,
            shuffle=False,  # the P×K sampler already shuffles (Keras warns that it ignores shuffle on a Dataset)
            verbose=1 if self.progress else 0,
        )
        return self._finish(loop, before, out, t_start, feedback)

    def _compile(self, trainable: Any, loss: Any) -> None:
        """Adam on a cosine-decay schedule with warm-up, as the plan says."""
        tc, steps = self.tc, self.data.steps
        total = tc.epochs * steps
        warmup = min(tc.warmup_epochs * steps, total // 2)
        lr = tc.peak_learning_rate
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / 10 if warmup else lr,
            decay_steps=max(total - warmup, 1),
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
            alpha=0.01,
        )
        trainable.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss=loss,
            jit_compile=False,  # XLA made CPU train steps 5x slower here
        )

    def _plan_line(self, before: dict[str, float]) -> str:
        """The line said before training: strategy, data, batches, selection and the validation before."""
        tc, data = self.tc, self.data
        split = data.split
        unseen_note = (
            f"{len(data.val.unseen)} images of {len(split.unseen_classes)} held-out classes"
            if data.val.unseen is not None
            else f"none ({split.note})"
            if split.note
            else "none"
        )
        return (
            f"training {tc.backbone} backbone ({self.name}), {tc.mode} mode, {tc.mining_used} mining: "
            f"{len(data.images)} train / {len(data.val.seen)} val images"
            + (f", class-disjoint val: {unseen_note}" if tc.labelled else "")
            + f", P×K = {data.p}×{data.k}, {data.steps} steps/epoch, up to {tc.epochs} epochs, "
            f"selecting on {self.select_on}; before: {_fmt(before)}"
        )

    def _finish(
        self,
        loop: _Loop,
        before: dict[str, float],
        out: str | Path | None,
        t_start: float,
        feedback: tuple[np.ndarray, ...] | None,
    ) -> TrainResult:
        """The best epoch's weights as a new trained embedder, the result, and the saved folder."""
        best, rows = loop.best, loop.history.rows
        collapsed = bool(rows) and bool(rows[best.best_epoch - 1].get("collapsed", 0.0))
        for part in (self.embedder.backbone, self.embedder.head):
            part.trainable = True
            for layer in part.layers:
                layer.trainable = True
        e = self.embedder
        trained = Embedder.assemble(e.backbone, e.head, dataclasses.replace(e.config, trained=True))
        seconds = time.perf_counter() - t_start
        result = TrainResult(
            trained,
            loop.history.as_lists(),
            best.best_epoch,
            best.best_logs.get("val_recall@1", float("nan")),
            seconds,
            collapsed,
            best_val_unseen_recall=best.best_logs.get("val_unseen_recall@1"),
            best_score=best.best,
            select_on=self.select_on,
        )
        self.say(
            f"best epoch {best.best_epoch} of {len(rows)}: {_fmt(before)} -> {_fmt(best.best_logs)} in {seconds:.0f} s"
            + (" (time budget reached)" if loop.budget is not None and loop.budget.hit else "")
        )
        if out is not None:
            extra: dict[str, Any] = {
                f"{key}_before": before[key] for key in ("val_recall@1", "val_unseen_recall@1") if key in before
            }
            if feedback is not None:
                extra["feedback_triplets"] = len(feedback[0])
            result.out = save_model(trained, out, self.tc, self.data.split, seconds, result=result, extra=extra)
        return result


@dataclasses.dataclass(frozen=True)
class _Loop:
    """The callbacks of one run: model selection, history, the time budget (None without one), and all of them
    in the order Keras calls them."""

    best: BestRecall
    history: History
    budget: TimeBudget | None
    callbacks: list[Any]

    @classmethod
    def start(cls, strategy: Strategy, out: str | Path | None, t_start: float, more: Sequence[Any]) -> _Loop:
        """The callbacks for ``strategy``'s run: validation and best-weights restore (saving each new best
        for a slow strategy), the collapse monitor, early stopping, history, ``more``, the time budget."""
        tc = strategy.tc
        on_best = None
        if out is not None and strategy.checkpoint_each_best:

            def on_best():
                save_model(strategy.embedder, out, tc, strategy.data.split, time.perf_counter() - t_start)

        best = BestRecall(strategy.validate, on_best)
        history = History()
        callbacks = [
            best,
            CollapseMonitor(lambda: strategy.embed(strategy._inputs["probe"])),
            keras.callbacks.EarlyStopping(monitor=SCORE_KEY, mode="max", patience=tc.patience),
            history,
            *more,
        ]
        budget = None
        if tc.minutes:
            spent = time.perf_counter() - t_start if tc.budget_covers == "run" else 0.0
            budget = TimeBudget(tc.minutes * 60 - spent, time.perf_counter())
            callbacks.append(budget)
        return cls(best, history, budget, callbacks)


def _loo_recall_at_1(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Recall@1 of each image against the others of the same set (images alone in their class left out)."""
    labels = np.asarray(labels).astype(str)
    values, per = np.unique(labels, return_counts=True)
    has_pair = np.isin(labels, values[per >= 2])
    _, idx = knn(embeddings, embeddings, 1, ref_includes_query=True)
    return float(np.mean(labels[idx[:, 0]][has_pair] == labels[has_pair])) if has_pair.any() else 0.0


def _fmt(logs: dict[str, float]) -> str:
    names = {"val_recall@1": "val R@1", "val_unseen_recall@1": "unseen R@1"}
    return ", ".join(f"{label} {logs[key]:.4f}" for key, label in names.items() if key in logs)


def say_to_stderr(progress: bool) -> Callable[[str], None]:
    """A ``say`` that prints to stderr when ``progress``, else does nothing."""
    return (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
