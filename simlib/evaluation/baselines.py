"""The baselines a trained model is scored against, named for what they are.

- pixels: :func:`simlib.evaluation.pixel_embeddings` (16×16 thumbnails);
- the backbone as it comes (random weights: "untrained backbone"; ImageNet weights: "ImageNet
  backbone", which has been trained, on ImageNet): :func:`backbone_name`, :func:`backbone_baseline`;
- the **head before training** (:func:`head_before_training`): the trained model's own
  architecture and fitted statistics (the standardisation and whitened PCA that ``fit`` fits on the
  training images before the first step), with no gradient step. The trained model minus this row is
  what training added; this row minus the backbone row is what the architecture added.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

HEAD_BEFORE_TRAINING = "head before training"


def backbone_name(weights: str) -> str:
    """How a comparison calls the backbone as it comes, by its resolved weights policy."""
    if weights == "none":
        return "untrained backbone"
    if weights == "imagenet":
        return "ImageNet backbone"
    return f"pretrained backbone ({Path(str(weights)).name})"


def backbone_baseline(config) -> Any:
    """The backbone as it comes with simlib's plain head (global pooling, a projection), for the
    weights, image size, seed and precision of ``config``."""
    from simlib.config import ModelConfig
    from simlib.model import Embedder

    return Embedder.build(
        ModelConfig(
            image_size=config.image_size,
            embedding_dim=config.embedding_dim,
            weights=config.weights,
            seed=config.seed,
            precision=config.precision,
        )
    )


def head_before_training(trained, record, table, progress: bool = False):
    """The model ``trained`` was before its first gradient step.

    Rebuilds the trained model's architecture (``trained.config`` with ``trained=False``: the same
    backbone weights and head layers, initialised from the same seed), draws the run's split again
    from its ``training.json`` (``record``) and fits the head's statistics on the same training images,
    as :func:`simlib.train.fit` does before training.

    Args:
        trained: the trained :class:`~simlib.model.Embedder`.
        record: its :class:`~simlib.train.TrainingRecord`.
        table: the dataset it was trained on (the same one, for the same split).
        progress: a progress bar while the backbone features are computed.

    A run that started from a saved model (``simlib train --model``, feedback refinement) started
    from that model instead: score that model as its "before".
    """
    import keras

    from simlib.config import from_dict
    from simlib.data import load_images
    from simlib.model import Embedder
    from simlib.model.features import pooled_features
    from simlib.model.network import adapt_head
    from simlib.train import TrainConfig
    from simlib.train.split import make_split

    tc = from_dict(TrainConfig, record.train_config)
    keras.utils.set_random_seed(tc.seed)  # as fit() does before it builds the model
    split = make_split(table, tc)
    config = dataclasses.replace(trained.config, trained=False)
    fresh = Embedder.build(config)
    images = load_images(split.train, config.image_size, config.resize)
    # the same backbone and images as the training run: with the feature cache on, no backbone pass
    pooled = pooled_features(fresh, images, progress=progress and "head before training: features")
    adapt_head(fresh.head, pooled, seed=tc.seed)
    # the fitted statistics are weights: assemble again so the fingerprint covers them
    return Embedder.assemble(fresh.backbone, fresh.head, config)
