"""Triplet training of the embedding model, with labels (P×K mining) or without (augmented views).

:func:`fit` is what the notebooks and ``simlib train`` call. Three backbone policies:

- ``frozen`` (default): the backbone's pooled features are computed once per image (and per
  augmented view) and cached; only the head (optional hidden layer + projection) trains, on
  the cached features, in seconds per epoch. The trained head is part of the full model, which
  is saved whole (backbone + head) and works everywhere an untrained one does.
- ``partial``: the last ResNet stage (conv5) and the head train on augmented images; batch
  normalisation statistics stay frozen.
- ``full``: the whole network trains. From random weights on a CPU this is slow and prone
  to collapse; the collapse monitor says so.

Keras callbacks do the bookkeeping: validation Recall@1 each epoch (the best weights are kept
and restored), early stopping, a CSV history, the collapse monitor, a time budget.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simlib.config import ModelConfig, to_dict
from simlib.data import ImageTable, load_images, split_table
from simlib.errors import SimlibError

MODES = ("labels", "self")
BACKBONES = ("frozen", "partial", "full")
# The head simlib train gives a model: standardised pooled features -> 512 ReLU -> projection.
DEFAULT_HEAD_HIDDEN = 512
RECOMMENDED_HEAD = {"head_hidden": DEFAULT_HEAD_HIDDEN, "head_norm": True}
HISTORY_FILE = "history.csv"
TRAINING_FILE = "training.json"
# A probe batch whose embeddings have a mean pairwise cosine above this, or whose spread
# (per-dimension std × sqrt(d); about 1 for well spread unit vectors) is below COLLAPSE_SPREAD,
# has collapsed: every image maps to nearly the same point and the triplet loss sits at the margin.
COLLAPSE_COSINE = 0.9
COLLAPSE_SPREAD = 0.2


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a model is trained (saved as JSON beside the trained model).

    Attributes:
        mode: "labels" (positives share a class) or "self" (positives are augmented views of the
            same image; no labels needed).
        backbone: "frozen" (cache backbone features, train the head), "partial" (conv5 + head)
            or "full".
        mining: "hard", "semihard" or "all" (see :mod:`simlib.losses`); "" picks batch-hard in
            labels mode and batch-all in self mode (every positive there is an augmented view,
            and the hardest ones are outliers that drive batch-hard towards collapse).
        margin: triplet margin on the unit sphere.
        epochs: most epochs; early stopping and ``minutes`` may end training sooner.
        steps_per_epoch: batches per epoch (0: about one pass over the training images).
        classes_per_batch: P in P×K (images per batch in self mode).
        images_per_class: K in P×K (views per image in self mode).
        views: views cached per training image on the frozen path: the original, then augmented
            copies (0: 1 in labels mode, 3 in self mode). Augmented views made batch-hard
            training on a random backbone collapse in labels mode, so it uses the originals only.
        learning_rate: peak learning rate (0: 1e-3 for a frozen backbone, 1e-4 otherwise).
        warmup_epochs: epochs of linear warm-up before the cosine decay.
        patience: epochs without a better validation Recall@1 before stopping.
        minutes: time budget for the whole run (0: none).
        val_fraction: share of images held out for validation (checkpoint selection).
        test_fraction: share held out for testing (never seen here; see :mod:`simlib.evaluation`).
        split_by: "image" or "class": the split the held-out parts come from.
        seed: seeds the split, the sampler, the augmentations and the weights.
        feedback_weight: weight of the feedback triplets' loss added to each batch's loss (with
            ``fit(..., feedback=...)``).
        feedback_batch: feedback triplets drawn (with replacement) for each batch.
    """

    mode: str = "labels"
    backbone: str = "frozen"
    mining: str = ""
    margin: float = 0.2
    epochs: int = 40
    steps_per_epoch: int = 0
    classes_per_batch: int = 16
    images_per_class: int = 4
    views: int = 0
    learning_rate: float = 0.0
    warmup_epochs: int = 1
    patience: int = 15
    minutes: float = 0.0
    val_fraction: float = 0.1
    test_fraction: float = 0.3
    split_by: str = "image"
    seed: int = 0
    feedback_weight: float = 1.0
    feedback_batch: int = 8

    def __post_init__(self) -> None:
        from simlib.losses import MINING

        if self.mode not in MODES:
            raise SimlibError(f"training mode must be 'labels' or 'self', not {self.mode!r}")
        if self.backbone not in BACKBONES:
            raise SimlibError(f"backbone must be frozen, partial or full, not {self.backbone!r}")
        if self.mining and self.mining not in MINING:
            raise SimlibError(f"mining must be one of {', '.join(MINING)}, not {self.mining!r}")
        if self.epochs < 1:
            raise SimlibError(f"epochs must be at least 1, not {self.epochs}")
        if self.views == 1 and self.mode == "self":
            raise SimlibError("self mode needs at least 2 views per image")
        if self.minutes < 0:
            raise SimlibError(f"--minutes must be positive, not {self.minutes}")
        if self.feedback_weight < 0 or self.feedback_batch < 1:
            raise SimlibError("the feedback weight must be >= 0 and the feedback batch at least 1")

    @property
    def mining_used(self) -> str:
        """The mining actually used."""
        return self.mining or ("hard" if self.mode == "labels" else "all")

    @property
    def n_views(self) -> int:
        """Views per training image actually used."""
        return self.views or (1 if self.mode == "labels" else 3)

    @property
    def peak_learning_rate(self) -> float:
        """The learning rate actually used."""
        return self.learning_rate or (1e-3 if self.backbone == "frozen" else 1e-4)


@dataclasses.dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        embedder: the trained :class:`~simlib.model.Embedder` (best validation epoch), ``trained=True``
            in its config.
        history: per-epoch lists (loss, val_recall@1, probe_mean_cosine, probe_spread, lr, ...).
        best_epoch: 1-based epoch whose weights were kept.
        best_val_recall: validation Recall@1 of those weights.
        seconds: wall time of the whole run (caching included).
        collapsed: True when the collapse monitor fired at the kept epoch.
        out: the saved model folder, if any.
    """

    embedder: Any
    history: dict[str, list[float]]
    best_epoch: int
    best_val_recall: float
    seconds: float
    collapsed: bool
    out: Path | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON-ready part of the result."""
        return {
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_val_recall@1": self.best_val_recall,
            "seconds": round(self.seconds, 2),
            "collapsed": self.collapsed,
        }


# ----------------------------------------------------------------------------- collapse monitor
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


def _callbacks():
    """Keras callback classes, defined on first use (keeps ``import simlib.train`` cheap)."""
    import keras

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
        """Validation Recall@1 each epoch; keeps the best weights in memory and restores them at the end."""

        def __init__(self, evaluate: Callable[[], float], on_best: Callable[[], None] | None = None) -> None:
            super().__init__()
            self.evaluate = evaluate
            self.on_best = on_best
            self.best = -1.0
            self.best_epoch = 0
            self.best_weights = None

        def on_epoch_end(self, epoch, logs=None):
            value = float(self.evaluate())
            if logs is not None:
                logs["val_recall@1"] = value
                logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            if value > self.best:
                self.best, self.best_epoch = value, epoch + 1
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

    return CollapseMonitor, BestRecall, TimeBudget, History


# ----------------------------------------------------------------------------- data
def _label_codes(labels: np.ndarray) -> np.ndarray:
    _, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def _features_fn(embedder):
    """A compiled function from uint8 images to the embedder's pooled backbone features."""
    import tensorflow as tf

    from simlib.model.network import split_head

    pool, _ = split_head(embedder.head)
    backbone = embedder.backbone

    @tf.function(reduce_retracing=True)
    def fn(x):
        return pool(backbone(tf.cast(x, tf.float32), training=False), training=False)

    return fn


def _batched(fn, images: np.ndarray, batch: int = 64, progress: bool | str = False) -> np.ndarray:
    from tqdm.auto import tqdm

    starts = range(0, len(images), batch)
    desc = progress if isinstance(progress, str) else None
    bar = tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False)
    return np.concatenate([np.asarray(fn(images[i : i + batch]), np.float32) for i in bar])


def _views(images: np.ndarray, n_views: int, seed: int, size: int, batch: int = 256) -> list[np.ndarray]:
    """The images themselves, then ``n_views - 1`` augmented copies (one seeded augmenter per view)."""
    from simlib.samplers import Augmenter

    out = [images]
    for v in range(1, n_views):
        aug = Augmenter(size, seed=seed * 1000 + v)
        out.append(np.concatenate([aug(images[i : i + batch]) for i in range(0, len(images), batch)]))
    return out


# ----------------------------------------------------------------------------- fit
def fit(
    table: ImageTable,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    embedder=None,
    feedback=None,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train an embedding model with triplet loss and (optionally) save it.

    Args:
        table: the images; labels are needed in ``mode="labels"`` and ignored in ``mode="self"``.
        model_config: the model to build (weights must be resolved); ignored when ``embedder`` is
            given. Default: ``ModelConfig(**RECOMMENDED_HEAD)`` (standardised features, a 512-wide
            hidden layer); a config without them trains today's single linear projection.
        train_config: how to train.
        out: folder to save the trained model in (``model.keras``, ``config.json``,
            ``history.csv``, ``training.json``); None keeps it in memory only.
        progress: show progress bars and per-epoch lines.
        embedder: start from this :class:`~simlib.model.Embedder` instead of building one (e.g.
            ``Embedder.load(dir)`` of the served model, to refine it with feedback); it is copied,
            not changed.
        feedback: user feedback to train on as well: a feedback folder or ``feedback.jsonl``,
            entries from :func:`simlib.feedback.read_feedback`, or triplets from
            :func:`simlib.feedback.feedback_triplets`. Each batch's loss becomes the mined batch
            loss + ``feedback_weight`` × the triplet loss of ``feedback_batch`` feedback triplets.
        callbacks: more Keras callbacks for the training loop (e.g. ``keras.callbacks.TensorBoard``);
            they see the trained part only: the head on a frozen backbone, else the whole model.

    Returns:
        A :class:`TrainResult` holding a new embedder with the best validation weights.
    """
    import keras

    from simlib.model import Embedder

    tc = train_config or TrainConfig()
    t_start = time.perf_counter()
    if tc.mode == "labels" and not table.has_labels:
        raise SimlibError(
            f"{table.name} has no labels: use --mode self (label-free), or class sub-folders / a label column"
        )
    keras.utils.set_random_seed(tc.seed)
    labelled = tc.mode == "labels"
    split = split_table(
        table if labelled else dataclasses.replace(table, labels=None),
        seed=tc.seed,
        val=tc.val_fraction,
        test=tc.test_fraction,
        by=tc.split_by if labelled else "image",
    )
    train_t, val_t = split["train"], split["val"]
    if len(train_t) < 4 or len(val_t) < 2:
        raise SimlibError(f"{table.name} has too few images to train on ({len(table)}): use at least a few dozen")
    if embedder is None:
        embedder = Embedder.build(model_config or ModelConfig(**RECOMMENDED_HEAD))
    else:  # train a copy: the caller's embedder (and its fingerprint) stays valid
        embedder = embedder.clone(backbone=tc.backbone != "frozen")
    cfg = embedder.config
    size = cfg.image_size

    say = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
    train_images = load_images(train_t, size, cfg.resize, progress and "decoding train images")
    val_images = load_images(val_t, size, cfg.resize, progress and "decoding val images")
    if labelled:
        train_ids = _label_codes(train_t.labels)
        n_groups = len(np.unique(train_ids))
    else:
        train_ids = np.arange(len(train_t), dtype=np.int64)
        n_groups = len(train_t)
    p = min(tc.classes_per_batch, n_groups)
    k = tc.images_per_class if labelled else min(tc.images_per_class, tc.n_views)
    steps = tc.steps_per_epoch or max(10, len(train_t) * (1 if labelled else tc.n_views) // (p * k))
    # What validation embeds each epoch. Labels: val images query val + (up to 2,000) train images,
    # which keeps Recall@1 defined and stable on small folders. Self: a fixed augmented copy of each
    # val image must find its original (near-duplicate retrieval, no labels needed).
    rng = np.random.default_rng(tc.seed)
    sets = {"val": val_images, "probe": val_images[rng.permutation(len(val_images))[:64]]}
    if labelled:
        ref_rows = np.sort(rng.permutation(len(train_images))[:2000])
        sets["train_refs"] = ref_rows  # rows of train_images: their cached features are reused
        ref_labels = np.concatenate([val_t.labels, train_t.labels[ref_rows]])
    else:
        sets["queries"] = _views(val_images, 2, seed=tc.seed + 99, size=size)[1]

    CollapseMonitor, BestRecall, TimeBudget, History = _callbacks()
    from simlib.losses import BatchTripletLoss
    from simlib.metrics import evaluate, knn

    triplets = None
    if feedback is not None:
        triplets = feedback_images(feedback, train_images, size, cfg.resize, tc.seed)
    setup = _frozen_setup if tc.backbone == "frozen" else _image_setup
    trainable, train_data, embed = setup(embedder, train_images, train_ids, sets, tc, p, k, steps, say, progress)
    loss = BatchTripletLoss(mining=tc.mining_used, margin=tc.margin)
    if triplets is not None:
        train_data, loss = _add_feedback(train_data, triplets, embedder, tc, steps, say)

    def val_recall() -> float:
        val = embed("val")
        if labelled:
            refs = np.concatenate([val, embed("train_refs")])
            _, idx = knn(val, refs, 2)
            own = idx[:, 0] == np.arange(len(val))
            first = np.where(own, idx[:, 1], idx[:, 0])  # nearest reference other than the query itself
            return float(np.mean(ref_labels[first] == val_t.labels))
        ids = np.arange(len(val))
        return evaluate(embed("queries"), ids, val, ids, ref_includes_query=False, ks=(1,))["recall@1"]

    lr = tc.peak_learning_rate
    total = tc.epochs * steps
    warmup = min(tc.warmup_epochs * steps, total // 2)
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
    on_best = None
    if out is not None and tc.backbone != "frozen":
        # Slow runs keep their best model on disk as they go; a frozen run saves once at the end.
        def on_best():
            _save(embedder, out, tc, None, time.perf_counter() - t_start)

    best = BestRecall(val_recall, on_best)
    monitor = CollapseMonitor(lambda: embed("probe"))
    history = History()
    callbacks = [
        best,
        monitor,
        keras.callbacks.EarlyStopping(monitor="val_recall@1", mode="max", patience=tc.patience),
        history,
        *callbacks,
    ]
    budget = None
    if tc.minutes:
        budget = TimeBudget(tc.minutes * 60 - (time.perf_counter() - t_start), time.perf_counter())
        callbacks.append(budget)
    before = val_recall()
    say(
        f"training {tc.backbone} backbone, {tc.mode} mode, {tc.mining_used} mining: {len(train_t)} train / "
        f"{len(val_t)} val images, P×K = {p}×{k}, {steps} steps/epoch, up to {tc.epochs} epochs; "
        f"val Recall@1 before: {before:.4f}"
    )
    trainable.fit(
        train_data,
        epochs=tc.epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=1 if progress else 0,
    )
    rows = history.rows
    hist = {key: [r.get(key, float("nan")) for r in rows] for key in rows[0]} if rows else {}
    hist_best = best.best_epoch
    collapsed = bool(rows) and bool(rows[hist_best - 1].get("collapsed", 0.0))
    for part in (embedder.backbone, embedder.head):
        part.trainable = True
        for layer in part.layers:
            layer.trainable = True
    trained = Embedder.assemble(embedder.backbone, embedder.head, dataclasses.replace(cfg, trained=True))
    seconds = time.perf_counter() - t_start
    result = TrainResult(trained, hist, hist_best, best.best, seconds, collapsed)
    say(
        f"best epoch {hist_best} of {len(rows)}: val Recall@1 {before:.4f} -> {best.best:.4f} in {seconds:.0f} s"
        + (" (time budget reached)" if budget is not None and budget.hit else "")
    )
    if out is not None:
        extra = None if triplets is None else {"feedback_triplets": len(triplets[0])}
        result.out = _save(trained, out, tc, result, seconds, before=before, extra=extra)
    return result


# ----------------------------------------------------------------------------- feedback
def feedback_images(
    feedback: Any, gallery: np.ndarray, size: int, resize: str = "pad", seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User feedback as (anchor, positive, negative) uint8 image arrays, each (T, S, S, 3).

    The query is the anchor, a result marked similar the positive, one marked not similar the
    (hard) negative. A missing positive is an augmented copy of the anchor; a missing negative a
    random ``gallery`` image (both seeded). Triplets whose images can no longer be read are left
    out with a warning.

    Args:
        feedback: a feedback folder or file, :class:`simlib.feedback.Feedback` entries, or
            ``(anchor, positive | None, negative | None)`` path triplets.
        gallery: uint8 (N, S, S, 3) images to draw missing negatives from (the training images).
        size: image side in pixels.
        resize: the model's resize mode.
        seed: seeds the augmentations and the random negatives.

    Raises:
        SimlibError: the feedback holds no usable triplet.
    """
    import os

    from simlib.data import prepare_image
    from simlib.feedback import feedback_triplets
    from simlib.samplers import Augmenter

    items = feedback if not isinstance(feedback, str | os.PathLike) else None
    if items is not None and all(isinstance(t, tuple) for t in items):
        triplets = list(items)
    else:
        triplets = feedback_triplets(feedback if items is None else items)
    cache: dict[str, np.ndarray | None] = {}

    def image(path: str | None) -> np.ndarray | None:
        if path is not None and path not in cache:
            try:
                cache[path] = prepare_image(path, size, resize)
            except SimlibError as e:
                warnings.warn(f"feedback image left out: {e}", RuntimeWarning, stacklevel=3)
                cache[path] = None
        return None if path is None else cache[path]

    rng = np.random.default_rng(seed + 7)
    augment = Augmenter(size, seed=seed + 7)
    anchors, positives, negatives = [], [], []
    for a_path, p_path, n_path in triplets:
        a, pos, neg = image(a_path), image(p_path), image(n_path)
        if a is None or (p_path is not None and pos is None) or (n_path is not None and neg is None):
            continue
        anchors.append(a)
        positives.append(pos if pos is not None else augment(a[None])[0])
        negatives.append(neg if neg is not None else gallery[rng.integers(len(gallery))])
    if not anchors:
        raise SimlibError(
            "the feedback holds no usable triplet (no verdict on a result with an image file that can be read)"
        )
    return np.stack(anchors), np.stack(positives), np.stack(negatives)


def _add_feedback(train_data, triplets, embedder, tc, steps, say):
    """Append ``feedback_batch`` feedback triplets to every batch; returns (dataset, loss)."""
    import tensorflow as tf

    from simlib.losses import FeedbackTripletLoss

    t0 = time.perf_counter()
    images = np.concatenate(triplets)  # anchors, then positives, then negatives
    # The frozen path trains the head on cached backbone features: the feedback's are cached too.
    frozen = tc.backbone == "frozen"
    inputs = _batched(_features_fn(embedder), images) if frozen else images.astype(np.float32)
    n, f = len(triplets[0]), tc.feedback_batch
    a, p, neg = (tf.constant(inputs[i * n : (i + 1) * n]) for i in range(3))
    picks = np.random.default_rng(tc.seed + 11).integers(n, size=(tc.epochs * steps, f))
    pad = tf.fill((3 * f,), tf.constant(-1, tf.int64))

    def join(batch, pick):
        x, y = batch
        x = tf.concat([x, tf.gather(a, pick), tf.gather(p, pick), tf.gather(neg, pick)], axis=0)
        return x, tf.concat([y, pad], axis=0)

    ds = tf.data.Dataset.zip(train_data, tf.data.Dataset.from_tensor_slices(picks)).map(join).prefetch(2)
    say(f"feedback: {n} triplets, {f} per batch, weight {tc.feedback_weight} ({time.perf_counter() - t0:.1f} s)")
    loss = FeedbackTripletLoss(n_feedback=f, weight=tc.feedback_weight, mining=tc.mining_used, margin=tc.margin)
    return ds, loss


def _frozen_setup(embedder, train_images, train_ids, sets, tc, p, k, steps, say, progress):
    """Cache pooled backbone features once; the trainable model is the head on those features."""
    import tensorflow as tf

    from simlib.model.network import adapt_head, split_head
    from simlib.samplers import pk_batches

    features = _features_fn(embedder)
    t0 = time.perf_counter()
    views = _views(train_images, tc.n_views, tc.seed, embedder.image_size)
    train_feats = np.concatenate(
        [_batched(features, v, progress=progress and f"backbone features, view {i + 1}") for i, v in enumerate(views)]
    )
    adapt_head(embedder.head, train_feats)
    cached = {name: _batched(features, images) for name, images in sets.items() if name != "train_refs"}
    if "train_refs" in sets:
        cached["train_refs"] = train_feats[sets["train_refs"]]
    say(
        f"cached backbone features of {len(train_images)} train images × {tc.n_views} views and "
        f"{len(sets['val'])} val images in {time.perf_counter() - t0:.1f} s"
    )
    # views of one image share its id: in self mode P×K is then P images × K of their views
    ids = np.tile(train_ids, tc.n_views)
    batches = pk_batches(ids, p, k, tc.epochs * steps, seed=tc.seed)
    feats_t, ids_t = tf.constant(train_feats), tf.constant(ids)
    ds = tf.data.Dataset.from_tensor_slices(batches)
    ds = ds.map(lambda b: (tf.gather(feats_t, b), tf.gather(ids_t, b))).prefetch(2)

    _, head = split_head(embedder.head)

    @tf.function(reduce_retracing=True)
    def head_fn(f):
        return head(f, training=False)

    return head, ds, lambda name: np.asarray(head_fn(cached[name]))


def _image_setup(embedder, train_images, train_ids, sets, tc, p, k, steps, say, progress):
    """Train on augmented images: conv5 + head (partial) or everything (full)."""
    import tensorflow as tf

    from simlib.model.network import adapt_head
    from simlib.samplers import Augmenter, pk_batches

    size = embedder.image_size
    for layer in embedder.backbone.layers:
        if tc.backbone == "partial":
            # BN statistics of a frozen net must not drift: BN layers stay in inference mode.
            layer.trainable = layer.name.startswith("conv5_") and "_bn" not in layer.name
        else:
            layer.trainable = True
    if embedder.config.head_norm:
        sample = train_images[np.random.default_rng(tc.seed).permutation(len(train_images))[:2000]]
        adapt_head(embedder.head, _batched(_features_fn(embedder), sample))
    batches = pk_batches(train_ids, p, k, tc.epochs * steps, seed=tc.seed)
    augment = Augmenter(size, seed=tc.seed)

    def gen():
        for b in batches:
            yield augment(train_images[b]).astype(np.float32), train_ids[b]

    ds = tf.data.Dataset.from_generator(
        gen,
        output_signature=(
            tf.TensorSpec((p * k, size, size, 3), tf.float32),
            tf.TensorSpec((p * k,), tf.int64),
        ),
    ).prefetch(2)

    def embed(name):
        images = train_images[sets[name]] if name == "train_refs" else sets[name]
        return np.concatenate([embedder.embed_batch(images[i : i + 128]) for i in range(0, len(images), 128)])

    return embedder.model, ds, embed


def _save(embedder, out, tc, result, seconds, before=None, extra=None) -> Path:
    """Save the embedder (as trained) with its history and training settings, in one atomic write."""
    from simlib.model import Embedder

    if not embedder.config.trained:  # a checkpoint during training: fingerprint its current weights
        embedder = Embedder.assemble(
            embedder.backbone, embedder.head, dataclasses.replace(embedder.config, trained=True)
        )
    info: dict[str, Any] = {"train_config": to_dict(tc), "seconds": round(seconds, 2)}
    if result is not None:
        info.update(result.summary())
        info["val_recall@1_before"] = before
    info.update(extra or {})
    out = embedder.save(out, extra={TRAINING_FILE: info})
    if result is not None:
        _write_csv(out / HISTORY_FILE, result.history)
    return out


def _write_csv(path: Path, history: dict[str, list[float]]) -> None:
    import csv

    keys = list(history)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for row in zip(*(history[k] for k in keys), strict=True):
            w.writerow([f"{v:.6g}" for v in row])
