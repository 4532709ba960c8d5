"""Triplet training of the embedding model, with labels (P×K mining) or without (augmented views).

:func:`fit` is what the notebooks and ``simlib train`` call; it picks one of two strategies that
share one loop (:class:`~simlib.train.base.Strategy`):

- :class:`FrozenHead` (``backbone="frozen"``, default): the backbone's pooled features are
  computed once per image (and per augmented view) and cached; only the head (optional hidden
  layer + projection) trains, on the cached features, in seconds per epoch.
- :class:`FineTune` (``backbone="partial"``: the last stage and the head, batch-normalisation
  statistics frozen; ``"full"``: the whole network) trains on augmented images. From random
  weights on a CPU the full variant is slow and prone to collapse; the collapse monitor says so.

Model selection is honest about new classes: in labels mode validation has an image-disjoint
part (``val_recall@1``) and a class-disjoint one (``val_unseen_recall@1``: classes held out of
training, never test classes; see :mod:`simlib.train.split`); ``TrainConfig.select_on`` says
which picks the kept epoch and drives early stopping. ``training.json`` records the classes
trained on and held out (:class:`TrainingRecord`).

:func:`retrain_on_gallery` (:mod:`simlib.train.retrain`) trains on a served gallery's own labels and
rebuilds the gallery with the new model: what the app's "Train" button runs.

Importing this package imports Keras and TensorFlow; ``import simlib`` never imports it.
"""

from simlib.data import load_images
from simlib.train.base import Strategy, TrainingData, ValidationData
from simlib.train.callbacks import COLLAPSE_COSINE, COLLAPSE_SPREAD, EpochProgress, collapse_stats, is_collapsed
from simlib.train.feedback import feedback_images
from simlib.train.plan import (
    BACKBONES,
    DEFAULT_HEAD_HIDDEN,
    MODES,
    RANDOM_INIT_HEAD,
    RECOMMENDED_HEAD,
    SELECT_ON,
    TrainConfig,
    TrainResult,
    recommended_head,
)
from simlib.train.record import HISTORY_FILE, TRAINING_FILE, TrainingRecord
from simlib.train.retrain import RetrainResult, retrain_on_gallery
from simlib.train.run import fit, strategy_for, training_data
from simlib.train.split import Split, make_split
from simlib.train.strategies import FineTune, FrozenHead

__all__ = [
    "BACKBONES",
    "COLLAPSE_COSINE",
    "COLLAPSE_SPREAD",
    "DEFAULT_HEAD_HIDDEN",
    "HISTORY_FILE",
    "MODES",
    "RANDOM_INIT_HEAD",
    "RECOMMENDED_HEAD",
    "SELECT_ON",
    "TRAINING_FILE",
    "EpochProgress",
    "FineTune",
    "FrozenHead",
    "RetrainResult",
    "Split",
    "Strategy",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "TrainingRecord",
    "ValidationData",
    "collapse_stats",
    "feedback_images",
    "fit",
    "is_collapsed",
    "load_images",
    "make_split",
    "recommended_head",
    "retrain_on_gallery",
    "strategy_for",
    "training_data",
]
