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
            when one was given); the caller swaps it in.
        before: the served model's validation Recall@1, measured by the run before training.
        after: the new model's best validation Recall@1.
        seconds: the whole retraining (training, moving the model, indexing, calibrating, saving).
        training: the training run's :class:`~simlib.train.TrainResult`.
    """

    searcher: Searcher
    before: float
    after: float
    seconds: float
    training: TrainResult


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
) -> RetrainResult:
    """Train a model on the labelled images of ``searcher``'s gallery and rebuild the gallery with it.

    Labels mode on a frozen backbone (its features computed once, a small head trained for at most
    ``minutes``), every image training or validating (no test split: a model for this gallery).

    Args:
        searcher: the served searcher (read, never changed).
        minutes: training time budget (re-indexing and calibration come on top).
        epochs: most epochs (early stopping may end sooner).
        steps_per_epoch: batches per epoch (0: about one pass over the gallery).
        callbacks: more Keras callbacks for the training loop (e.g. one reporting each epoch).
        require_better: keep the new model only if its validation Recall@1 beats the served model's
            (measured by the same run before training); else raise.
        model_dir: where the new model goes (replaced atomically); None: memory only.
        index_dir: where the rebuilt index goes (replaced atomically); None: memory only.
        lock: held while the gallery is read (an app's lock: adding images may change it meanwhile).
        progress: called with ``(fraction done, what is happening)`` at each stage (training is 0 to 0.8).

    Raises:
        SimlibError: the index cannot be rebuilt while served, the gallery has too few labelled images, or
            (with ``require_better``) the new model is no better.
    """
    say = progress or (lambda fraction, text: None)
    t0 = time.perf_counter()
    index = searcher.index
    if not index.rebuilds_while_serving:
        raise SimlibError(f"a {index.backend} index cannot be rebuilt while it is served: retrain with `simlib train`")
    with lock if lock is not None else contextlib.nullcontext():
        gallery = index_table(index, skip_pathless=True)
        labelled = index_table(index, labelled_only=True)
        kind, location = index.config.kind, index.location()
    say(0.0, f"training on {len(labelled):,} labelled images (at most {minutes:g} min)")
    config = searcher.embedder.config
    config = dataclasses.replace(config, **recommended_head(config.weights, config.backbone), trained=False)
    settings = TrainConfig(
        mode="labels",
        backbone="frozen",
        epochs=epochs,
        minutes=minutes,
        steps_per_epoch=steps_per_epoch,
        test_fraction=0.0,  # a model for this gallery: every image trains or validates
    )
    run, before = _train_and_keep(labelled, config, settings, callbacks, require_better, model_dir, t0)
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
    return RetrainResult(built.searcher, before, run.best_val_recall, time.perf_counter() - t0, run)


def _train_and_keep(
    labelled: ImageTable,
    config: ModelConfig,
    settings: TrainConfig,
    callbacks: Sequence[Any],
    require_better: bool,
    model_dir: str | os.PathLike | None,
    t0: float,
) -> tuple[TrainResult, float]:
    """Train into a scratch folder; keep the model (moved into ``model_dir``) only if it is good enough.

    Returns ``(run, validation Recall@1 before training)``. A model no better than the served one is not
    kept (the next start would pick it up); the run's ``training.json`` holds the Recall@1 before training.
    """
    scratch = Path(tempfile.mkdtemp(prefix=".training-", dir=Path(model_dir).parent if model_dir else None))
    try:
        run = fit(labelled, config, settings, out=scratch / "model", progress=False, callbacks=list(callbacks))
        before = float(TrainingRecord.load(scratch / "model").info.get("val_recall@1_before") or 0.0)
        if require_better and run.best_val_recall <= before:
            raise SimlibError(
                f"training did not improve on the served model (validation Recall@1 {before:.2f} -> "
                f"{run.best_val_recall:.2f} in {time.perf_counter() - t0:.0f} s): it keeps serving the old one"
            )
        if model_dir is not None:
            with atomic_dir(model_dir) as tmp:
                shutil.copytree(scratch / "model", tmp, dirs_exist_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return run, before
