"""The training plan (:class:`TrainConfig`) and what a run returns (:class:`TrainResult`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from simlib.errors import SimlibError
from simlib.train.losses import MINING

MODES = ("labels", "self")
BACKBONES = ("frozen", "partial", "full")
# Which validation picks the kept epoch and drives early stopping (labels mode; self mode has one).
BUDGET_COVERS = ("run", "epochs")
SELECT_ON = ("seen", "unseen", "mean")
# The head simlib train gives a pretrained (ImageNet or local-file) backbone: standardised globally
# pooled features -> 512 ReLU -> projection, the usual shape for ImageNet features (not measured here:
# the weights cannot be downloaded on the project's machines).
DEFAULT_HEAD_HIDDEN = 512
RECOMMENDED_HEAD = {"head_hidden": DEFAULT_HEAD_HIDDEN, "head_norm": True}
# The head for a random-init backbone (``--weights none``), chosen on class-disjoint validation of the
# product set at 64 px (docs/training.md): a 4x4 grid of conv4 features keeps the layout that a random
# backbone's features carry (globally pooled conv5 features lost to 16x16 pixels on unseen classes,
# grid-pooled ones matched them), standardised, whitened by a PCA fitted on the training images, then one
# linear map trained from the identity. Trained this way the model beat pixels and the untrained backbone
# on seen and on unseen classes; a hidden layer, global pooling or cached augmented views did not.
RANDOM_INIT_HEAD = {
    "feature_stage": 4,
    "pooling": "grid",
    "grid_size": 4,
    "head_norm": True,
    "head_pca": 512,
    "head_hidden": 0,
}


def recommended_head(weights: str, backbone: str = "resnet50") -> dict[str, Any]:
    """The head fields :func:`simlib.train.fit` and ``simlib train`` use for a backbone's weights policy.

    Args:
        weights: the resolved weights ("none" for a random backbone; "imagenet" or a file path).
        backbone: the architecture; the tiny test backbone reads its last stage (it has no conv4).
    """
    head = dict(RANDOM_INIT_HEAD if weights == "none" else RECOMMENDED_HEAD)
    if backbone != "resnet50":
        head.pop("feature_stage", None)
    return head


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a model is trained (saved as JSON beside the trained model).

    Attributes:
        mode: "labels" (positives share a class) or "self" (positives are augmented views of the
            same image; no labels needed).
        backbone: "frozen" (cache backbone features, train the head), "partial" (conv5 + head)
            or "full".
        mining: "hard", "semihard" or "all" (see :mod:`simlib.train.losses`); "" picks batch-hard in
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
        patience: epochs without a better validation score (``select_on``) before stopping.
        minutes: time budget (0: none).
        budget_covers: what ``minutes`` counts: "run" (decoding, backbone features and epochs) or
            "epochs" (only the epochs: decoding and the frozen backbone's features come on top, so the
            budget buys epochs; the app's training uses it).
        val_fraction: share of each training class's images held out for the image-disjoint
            ("seen") validation.
        val_classes: labels mode: share of the training-side classes held out whole for the
            class-disjoint ("unseen") validation; never test classes (0: none, selection then
            uses the seen validation). Skipped, with a message, when fewer than
            :data:`MIN_TRAIN_CLASSES` classes would be left to train on.
        test_fraction: share held out for testing (never seen here; see :mod:`simlib.evaluation`).
        split_by: "image" or "class": how the test split is drawn (as ``simlib eval --split-by``).
        select_on: labels mode: the validation that picks the kept epoch and drives early
            stopping: "seen" (image-disjoint Recall@1), "unseen" (class-disjoint Recall@1) or
            "mean" (their mean). Default "unseen": the point of metric learning is classes never
            trained on, and selecting on seen classes kept the epochs that overfit them. Self mode
            always uses its near-duplicate validation.
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
    budget_covers: str = "run"
    val_fraction: float = 0.1
    val_classes: float = 0.2
    test_fraction: float = 0.3
    split_by: str = "image"
    select_on: str = "unseen"
    seed: int = 0
    feedback_weight: float = 1.0
    feedback_batch: int = 8

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SimlibError(f"training mode must be 'labels' or 'self', not {self.mode!r}")
        if self.backbone not in BACKBONES:
            raise SimlibError(f"backbone must be frozen, partial or full, not {self.backbone!r}")
        if self.mining and self.mining not in MINING:
            raise SimlibError(f"mining must be one of {', '.join(MINING)}, not {self.mining!r}")
        if self.select_on not in SELECT_ON:
            raise SimlibError(f"select_on must be one of {', '.join(SELECT_ON)}, not {self.select_on!r}")
        if self.epochs < 1:
            raise SimlibError(f"epochs must be at least 1, not {self.epochs}")
        if self.views == 1 and self.mode == "self":
            raise SimlibError("self mode needs at least 2 views per image")
        if self.minutes < 0:
            raise SimlibError(f"--minutes must be positive, not {self.minutes}")
        if self.budget_covers not in BUDGET_COVERS:
            raise SimlibError(f"budget_covers must be one of {', '.join(BUDGET_COVERS)}, not {self.budget_covers!r}")
        if not 0 <= self.val_classes < 1:
            raise SimlibError(f"val_classes must be in [0, 1), not {self.val_classes}")
        if self.feedback_weight < 0 or self.feedback_batch < 1:
            raise SimlibError("the feedback weight must be >= 0 and the feedback batch at least 1")

    @property
    def labelled(self) -> bool:
        """True in labels mode."""
        return self.mode == "labels"

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
    """What :func:`~simlib.train.fit` returns.

    Attributes:
        embedder: the trained :class:`~simlib.model.Embedder` (best validation epoch), ``trained=True``
            in its config.
        history: per-epoch lists (loss, val_recall@1, val_unseen_recall@1, val_score,
            probe_mean_cosine, probe_spread, lr, ...).
        best_epoch: 1-based epoch whose weights were kept (best ``val_score``).
        best_val_recall: image-disjoint validation Recall@1 of those weights (near-duplicate
            Recall@1 in self mode).
        seconds: wall time of the whole run (caching included).
        collapsed: True when the collapse monitor fired at the kept epoch.
        out: the saved model folder, if any.
        best_val_unseen_recall: class-disjoint validation Recall@1 of the kept weights (None
            without a class-disjoint validation).
        best_score: the selection score of the kept weights.
        select_on: the rule actually used ("seen", "unseen", "mean"; "seen" when there was no
            class-disjoint validation).
    """

    embedder: Any
    history: dict[str, list[float]]
    best_epoch: int
    best_val_recall: float
    seconds: float
    collapsed: bool
    out: Path | None = None
    best_val_unseen_recall: float | None = None
    best_score: float = float("nan")
    select_on: str = "seen"

    def summary(self) -> dict[str, Any]:
        """The JSON-ready part of the result."""
        return {
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_val_recall@1": self.best_val_recall,
            "best_val_unseen_recall@1": self.best_val_unseen_recall,
            "best_val_score": self.best_score,
            "select_on": self.select_on,
            "seconds": round(self.seconds, 2),
            "collapsed": self.collapsed,
        }
