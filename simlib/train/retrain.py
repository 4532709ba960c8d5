"""Retrain on a served gallery: a new model from the gallery's own labels, and the gallery rebuilt with it.

:func:`retrain_on_gallery` is what the app's "Train a model on this gallery" does between taking the
served searcher and swapping in the new one: train a head on a frozen backbone (labels mode, the head
recommended for the backbone's weights) into a scratch folder, keep the model only if it beats the
served one, move it into the model folder, and rebuild, calibrate and save the gallery with it
(:func:`simlib.search.gallery.build_gallery`). The served searcher is never changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simlib.config import IndexConfig, ModelConfig
from simlib.data import ImageTable
from simlib.errors import SimlibError
from simlib.search.feedback import FEEDBACK_FILE, feedback_triplets
from simlib.search.gallery import build_gallery
from simlib.search.searcher import Searcher
from simlib.search.tables import index_table
from simlib.storage import atomic_dir
from simlib.train.plan import TrainConfig, TrainResult, recommended_head
from simlib.train.record import TrainingRecord
from simlib.train.run import fit

RETRAIN_MINUTES = 2.0
RETRAIN_EPOCHS = 40


@dataclasses.dataclass(frozen=True)
class RetrainResult:
    """What :func:`retrain_on_gallery` made.

    Attributes:
        searcher: the new model over the same gallery, re-indexed and re-calibrated (saved in ``index_dir``
            when one was given); the caller swaps it in. None when the model was not kept.
        before: the served model's validation Recall@1, measured by the run before training.
        after: the new model's best validation Recall@1.
        seconds: the whole retraining (training, moving the model, indexing, calibrating, saving).
        training: the training run's :class:`~simlib.train.TrainResult`.
        kept: whether the new model was kept (with ``require_better``: only when it beat the served one).
        feedback: feedback triplets trained on as well (0: none).
    """

    searcher: Searcher | None
    before: float
    after: float
    seconds: float
    training: TrainResult
    kept: bool = True
    feedback: int = 0

    def summary(self) -> str:
        """One plain line: kept or not, the validation Recall@1 before and after, the time."""
        verdict = "kept" if self.kept else "not kept (no better than the served model)"
        fb = f", with {self.feedback} feedback triplet{'s' * (self.feedback != 1)}" if self.feedback else ""
        return (
            f"new model {verdict}: validation Recall@1 {self.before:.2f} -> {self.after:.2f} "
            f"({len(self.training.history.get('loss', []))} epochs, kept epoch {self.training.best_epoch}{fb}, "
            f"{self.seconds:.0f} s)"
        )


def retrain_on_gallery(
    searcher: Searcher,
    *,
    minutes: float = RETRAIN_MINUTES,
    epochs: int = RETRAIN_EPOCHS,
    steps_per_epoch: int = 0,
    callbacks: Sequence[Any] = (),
    require_better: bool = True,
    model_dir: str | os.PathLike | None = None,
    index_dir: str | os.PathLike | None = None,
    lock: contextlib.AbstractContextManager | None = None,
    progress: Callable[[float, str], None] | None = None,
    feedback: str | os.PathLike | None = None,
) -> RetrainResult:
    """Train a model on the labelled images of ``searcher``'s gallery and rebuild the gallery with it.

    Labels mode on a frozen backbone (its features computed once, then a small head trained for at most
    ``minutes`` of epochs: decoding and the features come on top, so the budget buys epochs), every image
    training or validating (no test split: a model for this gallery). A model no better than the served
    one (with ``require_better``) is a normal outcome: it is dropped and the result says so.

    Args:
        searcher: the served searcher (read, never changed).
        minutes: the epochs' time budget (decoding, backbone features, re-indexing and calibration come on top).
        epochs: most epochs (early stopping may end sooner).
        steps_per_epoch: batches per epoch (0: about one pass over the gallery).
        callbacks: more Keras callbacks for the training loop (e.g. one reporting each epoch).
        require_better: keep the new model only if its validation Recall@1 beats the served model's
            (measured by the same run before training); else drop it (``kept=False``, no searcher).
        model_dir: where the new model goes (replaced atomically); None: memory only.
        index_dir: where the rebuilt index goes (replaced atomically); None: memory only.
        lock: held while the gallery is read (an app's lock: adding images may change it meanwhile).
        progress: called with ``(fraction done, what is happening)`` at each stage (training is 0 to 0.8).
        feedback: a feedback folder (or its ``feedback.jsonl``): the verdicts given on this model's results
            train as triplets too (:func:`simlib.search.feedback.feedback_triplets`); missing or empty: none.

    Raises:
        SimlibError: the index cannot be rebuilt while served, or the gallery has too few labelled images.
    """
    say = monotone_progress(progress or (lambda fraction, text: None))
    t0 = time.perf_counter()
    index = searcher.index
    if not index.rebuilds_while_serving:
        raise SimlibError(f"a {index.backend} index cannot be rebuilt while it is served: retrain with `simlib train`")
    with lock if lock is not None else contextlib.nullcontext():
        gallery = index_table(index, skip_pathless=True)
        labelled = index_table(index, labelled_only=True)
        kind, location = index.config.kind, index.location()
    say(0.0, f"training on {len(labelled):,} labelled images (then at most {minutes:g} min of epochs)")
    config = searcher.embedder.config
    config = dataclasses.replace(config, **recommended_head(config.weights, config.backbone), trained=False)
    settings = TrainConfig(
        mode="labels",
        backbone="frozen",
        epochs=epochs,
        minutes=minutes,
        budget_covers="epochs",
        steps_per_epoch=steps_per_epoch,
        test_fraction=0.0,  # a model for this gallery: every image trains or validates
    )
    triplets = _feedback(feedback, searcher.fingerprint)
    if triplets:
        say(0.0, f"training on {len(labelled):,} labelled images and {len(triplets)} feedback triplets")
    run, before, kept = _train_and_keep(
        labelled, config, settings, callbacks, require_better, model_dir, triplets, lambda line: say(0.02, line)
    )
    if not kept:
        return RetrainResult(None, before, run.best_val_recall, time.perf_counter() - t0, run, False, len(triplets))
    say(0.8, f"indexing {len(gallery):,} images with the new model")
    built = build_gallery(
        run.embedder,
        gallery,
        config=IndexConfig(kind=kind),
        backend=index.backend,
        location=location,
        index_dir=index_dir,
        log=lambda line: say(0.95, line),
    )
    seconds = time.perf_counter() - t0
    return RetrainResult(built.searcher, before, run.best_val_recall, seconds, run, True, len(triplets))


def monotone_progress(progress: Callable[[float, str], None]) -> Callable[[float, str], None]:
    """``progress`` that never goes back: a stage line said during the epochs keeps the epochs' fraction."""
    done = [0.0]

    def say(fraction: float, text: str) -> None:
        done[0] = max(done[0], fraction)
        progress(done[0], text)

    return say


def _feedback(feedback: str | os.PathLike | None, fingerprint: str) -> list:
    """The feedback triplets given on this model's results (none without a feedback file)."""
    if feedback is None:
        return []
    path = Path(feedback)
    if not (path / FEEDBACK_FILE).is_file() and not path.is_file():
        return []
    return feedback_triplets(path, model_fingerprint=fingerprint)


def _train_and_keep(
    labelled: ImageTable,
    config: ModelConfig,
    settings: TrainConfig,
    callbacks: Sequence[Any],
    require_better: bool,
    model_dir: str | os.PathLike | None,
    triplets: list,
    say: Callable[[str], None],
) -> tuple[TrainResult, float, bool]:
    """Train into a scratch folder; keep the model (moved into ``model_dir``) only if it is good enough.

    Returns ``(run, validation Recall@1 before training, kept)``. A model no better than the served one is
    not kept (the next start would pick it up); the run's ``training.json`` holds the Recall@1 before training.
    """
    scratch = Path(tempfile.mkdtemp(prefix=".training-", dir=Path(model_dir).parent if model_dir else None))
    try:
        run = fit(
            labelled,
            config,
            settings,
            out=scratch / "model",
            progress=False,
            callbacks=list(callbacks),
            feedback=triplets or None,
            say=say,
        )
        before = float(TrainingRecord.load(scratch / "model").info.get("val_recall@1_before") or 0.0)
        if require_better and run.best_val_recall <= before:
            return run, before, False
        if model_dir is not None:
            with atomic_dir(model_dir) as tmp:
                shutil.copytree(scratch / "model", tmp, dirs_exist_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return run, before, True
