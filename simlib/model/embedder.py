"""The embedding model as one object: the two Keras sub-models, their config and fingerprint.

A saved model is a folder (:mod:`simlib.model.folder`): ``model.keras`` (the backbone and the head as
two nested models) and ``config.json`` (the :class:`ModelConfig` and the fingerprint, computed once when
the weights were last changed and read back on loading).

Keras and TensorFlow load only inside the methods that build, load or run a model (``import simlib``
stays light).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simlib.config import DEFAULT_EMBEDDING_DIM, DEFAULT_IMAGE_SIZE, ModelConfig, to_dict
from simlib.data import prepare_image
from simlib.errors import SimlibError
from simlib.model.embed import embed_batches, embed_table
from simlib.model.folder import MODEL_FILE, read_model_folder, write_model_config
from simlib.model.network import build_backbone, build_head, copy_legacy_weights, custom_layers, set_weights
from simlib.model.weights import bfloat16_supported, resolve_weights
from simlib.storage import atomic_dir, save_json


def fingerprint_of(config: ModelConfig, weight_arrays: Iterable[Any]) -> str:
    """A short hash of a config and weights: two embedders embed alike iff these match."""
    h = hashlib.sha256()
    h.update(repr(sorted(to_dict(config).items(), key=lambda kv: kv[0])).encode())
    for w in weight_arrays:
        h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True, eq=False)
class Embedder:
    """Images in, unit vectors out: ``Embedder.build(config).embed_images([path])``.

    Attributes:
        backbone: Keras model, float RGB images in [0, 255] (B, S, S, 3) -> feature maps.
        head: Keras model, feature maps -> L2-normalised (B, embedding_dim) float32 vectors.
        config: how it was built (weights resolved) and whether it was trained.
        fingerprint: hash of ``config`` and every weight; an index records the one that built it.

    The weights must not change once an Embedder exists: training builds a new one with
    :meth:`assemble`, which hashes the new weights.
    """

    backbone: Any
    head: Any
    config: ModelConfig
    fingerprint: str

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, config: ModelConfig | None = None, **overrides: Any) -> Embedder:
        """Build a fresh embedder.

        Args:
            config: the model configuration; ``weights="auto"`` is resolved here (see
                :func:`simlib.model.resolve_weights`).
            **overrides: fields to change in ``config`` (e.g. ``image_size=32``).
        """
        import keras  # lazy: Keras

        config = dataclasses.replace(config or ModelConfig(), **overrides)
        if config.weights == "auto":
            config = dataclasses.replace(config, weights=resolve_weights("auto"))
        if config.precision == "mixed_bfloat16" and not bfloat16_supported():
            print(
                "warning: this CPU has no native bfloat16 (AVX-512 BF16 or AMX): mixed_bfloat16 will be "
                "slower than float32 here",
                file=sys.stderr,
            )
        keras.utils.set_random_seed(config.seed)
        # Keras reads the dtype policy when each layer is created: set it for this build only.
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(config.precision)
        try:
            backbone = build_backbone(config)
            head = build_head(config, tuple(backbone.output.shape[1:]))
        finally:
            keras.mixed_precision.set_global_policy(previous)
        return cls.assemble(backbone, head, config)

    @classmethod
    def assemble(cls, backbone: Any, head: Any, config: ModelConfig) -> Embedder:
        """An embedder from its parts, fingerprinting their current weights."""
        return cls(backbone, head, config, fingerprint_of(config, [*backbone.weights, *head.weights]))

    def with_precision(self, precision: str) -> Embedder:
        """The same embedder computing in ``precision`` ("float32" or "mixed_bfloat16"), sharing no state.

        Weights are float32 under both policies, so they are copied unchanged.
        """
        if self.config.precision == precision:
            return self
        twin = Embedder.build(dataclasses.replace(self.config, precision=precision, weights="none"))
        set_weights(twin.backbone, self.backbone.get_weights())
        set_weights(twin.head, self.head.get_weights())
        return Embedder.assemble(twin.backbone, twin.head, dataclasses.replace(self.config, precision=precision))

    def clone(self, backbone: bool = True) -> Embedder:
        """A copy whose head (and, with ``backbone``, backbone) is a new Keras model with the same
        weights: training the copy leaves this embedder as it is."""
        import keras  # lazy: Keras

        def copy(model):
            twin = keras.models.clone_model(model)
            set_weights(twin, model.get_weights())
            return twin

        return Embedder(
            copy(self.backbone) if backbone else self.backbone, copy(self.head), self.config, self.fingerprint
        )

    # ------------------------------------------------------------------ saving and loading
    def save(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write ``model.keras`` + ``config.json`` to ``directory``, replacing it atomically.

        Args:
            directory: the model folder.
            extra: files to add to the same atomic write, name -> JSON-ready content.
        """
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            self.model.save(tmp / MODEL_FILE)
            write_model_config(tmp, self.config, self.fingerprint)
            for name, content in (extra or {}).items():
                save_json(tmp / name, content)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Embedder:
        """Load a folder written by :meth:`save` (safe mode: no arbitrary code is deserialised).

        Folders written by simlib 0.1 (one flat Keras model) load too, with their recorded fingerprint.
        """
        import keras  # lazy: Keras

        directory = Path(directory)
        saved_model = read_model_folder(directory)
        config = saved_model.config
        custom_layers()
        try:
            saved = keras.saving.load_model(directory / MODEL_FILE, compile=False, safe_mode=True)
        except Exception as e:
            raise SimlibError(f"cannot load the model in {directory}: {type(e).__name__}: {str(e)[:200]}") from None
        names = {layer.name for layer in saved.layers}
        if {"backbone", "head"} <= names:
            backbone, head = saved.get_layer("backbone"), saved.get_layer("head")
        else:  # simlib 0.1 layout: rebuild the two parts and copy the weights in by layer name
            fresh = Embedder.build(dataclasses.replace(config, weights="none"))
            backbone, head = fresh.backbone, fresh.head
            copy_legacy_weights(saved, backbone, head)
        if saved_model.fingerprint is None:
            return cls.assemble(backbone, head, config)
        return cls(backbone, head, config, saved_model.fingerprint)

    # ------------------------------------------------------------------ the network
    @functools.cached_property
    def model(self):
        """One Keras model, images -> embeddings (backbone then head); built on first use."""
        import keras  # lazy: Keras

        s = self.config.image_size
        image = keras.Input((s, s, 3), name="image")
        return keras.Model(image, self.head(self.backbone(image)), name="simlib_embedding")

    @functools.cached_property
    def forward(self):
        """The compiled inference function, uint8 (B, S, S, 3) -> float32 (B, d), traced once.

        A fixed input signature avoids retracing for every new batch size, which is what makes
        ``model.predict`` slow on single queries.
        """
        import tensorflow as tf  # lazy: TensorFlow

        s = self.config.image_size
        backbone, head = self.backbone, self.head
        return tf.function(
            lambda x: head(backbone(tf.cast(x, tf.float32), training=False), training=False),
            input_signature=[tf.TensorSpec((None, s, s, 3), tf.uint8)],
        )

    @property
    def dim(self) -> int:
        """Embedding size."""
        return self.config.embedding_dim

    @property
    def image_size(self) -> int:
        """Side of the square input in pixels."""
        return self.config.image_size

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one image's backbone feature map (h, w, c)."""
        return tuple(int(v) for v in self.backbone.output.shape[1:])

    # ------------------------------------------------------------------ embedding
    def embed_batch(self, images: np.ndarray) -> np.ndarray:
        """Embed a uint8 batch (B, S, S, 3) already at the model's image size."""
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self.forward(np.ascontiguousarray(images, dtype=np.uint8)), dtype=np.float32)

    def embed_images(self, sources: Sequence[Any]) -> np.ndarray:
        """Embed a few images (paths, bytes, PIL images or arrays); raises SimlibError on a bad one."""
        if not len(sources):
            return np.zeros((0, self.dim), np.float32)
        return self.embed_batch(np.stack([prepare_image(s, self.image_size, self.config.resize) for s in sources]))

    def embed_table(self, table, **kwargs: Any):
        """Embed every row of an :class:`~simlib.data.ImageTable`; see :func:`simlib.model.embed.embed_table`."""
        return embed_table(self, table, **kwargs)

    def embed_batches(self, table, **kwargs: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream ``(embeddings, rows)``; see :func:`simlib.model.embed.embed_batches`."""
        return embed_batches(self, table, **kwargs)


def open_embedder(
    model_dir: str | os.PathLike | None = None,
    *,
    image_size: int | None = None,
    weights: str = "auto",
    embedding_dim: int | None = None,
    precision: str | None = None,
) -> Embedder:
    """The embedder a command or the app asked for: the saved one in ``model_dir``, else a fresh one.

    Args:
        model_dir: a saved model folder; ``image_size`` must then be None or match it.
        image_size: a fresh model's input side (default :data:`simlib.config.DEFAULT_IMAGE_SIZE`).
        weights: a fresh model's weights policy (see :func:`simlib.model.resolve_weights`).
        embedding_dim: a fresh model's embedding size (default :data:`simlib.config.DEFAULT_EMBEDDING_DIM`).
        precision: compute precision; None keeps the saved model's (float32 for a fresh one).
    """
    if model_dir is not None:
        embedder = Embedder.load(model_dir)
        if image_size and image_size != embedder.image_size:
            raise SimlibError(
                f"--image-size {image_size} conflicts with the model's own {embedder.image_size}: "
                "drop --image-size when using --model"
            )
        return embedder.with_precision(precision) if precision else embedder
    config = ModelConfig(
        image_size=image_size or DEFAULT_IMAGE_SIZE,
        embedding_dim=embedding_dim or DEFAULT_EMBEDDING_DIM,
        weights=resolve_weights(weights),
        precision=precision or "float32",
    )
    return Embedder.build(config)
