"""The embedding model: ResNet50 backbone, pooling, projection, L2 normalisation.

A simlib model directory holds ``model.keras`` and ``config.json`` (a :class:`ModelConfig`).
The model takes float RGB images in [0, 255] of shape (S, S, 3) and returns unit vectors;
ResNet's own preprocessing is a layer inside it, so a saved model carries it along.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np

from simlib.config import ModelConfig, from_dict, to_dict
from simlib.errors import SimlibError
from simlib.storage import atomic_dir, load_json, save_json

IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
BACKBONE_NAME = "resnet50"
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
# Long enough for a real download to start, short enough that a firewalled machine fails fast.
NETWORK_TIMEOUT_S = 15

_LAYERS: dict[str, Any] = {}


def _custom_layers() -> dict[str, Any]:
    """Define and register simlib's Keras layers once, on first use (keeps import cheap)."""
    if _LAYERS:
        return _LAYERS
    import keras

    @keras.saving.register_keras_serializable(package="simlib")
    class ResNetPreprocess(keras.layers.Layer):
        """``keras.applications.resnet50.preprocess_input`` as a layer: RGB->BGR, ImageNet mean."""

        def call(self, x):
            x = keras.ops.flip(x, axis=-1)
            mean = keras.ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=x.dtype)
            return x - mean

    @keras.saving.register_keras_serializable(package="simlib")
    class L2Normalize(keras.layers.Layer):
        """Scale each vector to unit length, so cosine similarity is an inner product."""

        def call(self, x):
            return keras.ops.normalize(x, axis=-1, order=2, epsilon=1e-12)

    _LAYERS.update(ResNetPreprocess=ResNetPreprocess, L2Normalize=L2Normalize)
    return _LAYERS


def imagenet_weights_cached() -> bool:
    """True when Keras already has the ResNet50 ImageNet (no-top) weights in its cache."""
    from keras.src.backend.config import keras_home

    return (Path(keras_home()).expanduser() / "models" / IMAGENET_NOTOP_FILE).is_file()


def resolve_weights(weights: str, warn: bool = True) -> str:
    """Turn the user's weights policy into what the backbone is built with.

    Args:
        weights: "auto" (ImageNet when cached or downloadable, else untrained with a warning),
            "imagenet" (fail fast when it cannot be had), "none", or a path to a local
            ``.h5`` / ``.weights.h5`` file.
        warn: print the one-line warning when "auto" falls back to an untrained backbone.

    Returns:
        "imagenet", "none" or an absolute file path.
    """
    w = str(weights).strip()
    if w.lower() in ("none", "random", ""):
        return "none"
    if w.lower() in ("imagenet", "auto"):
        if imagenet_weights_cached():
            return "imagenet"
        try:
            _download_imagenet_weights()
            return "imagenet"
        except SimlibError as e:
            if w.lower() == "imagenet":
                raise
            if warn:
                print(f"warning: {e}; using an untrained (random) backbone instead", file=sys.stderr)
            return "none"
    path = Path(w).expanduser()
    if not path.is_file():
        raise SimlibError(f"weights file {path} not found: use --weights imagenet, none or a path to a .h5 file")
    if not path.name.endswith(".h5"):
        raise SimlibError(f"weights file {path} must be a Keras .h5 or .weights.h5 file")
    return str(path.resolve())


def _download_imagenet_weights() -> None:
    """Fetch the weights into Keras' cache with Keras' own downloader, failing fast offline."""
    import keras
    from keras.src.applications.resnet import BASE_WEIGHTS_PATH, WEIGHTS_HASHES

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NETWORK_TIMEOUT_S)
    try:
        keras.utils.get_file(
            IMAGENET_NOTOP_FILE,
            BASE_WEIGHTS_PATH + IMAGENET_NOTOP_FILE,
            cache_subdir="models",
            file_hash=WEIGHTS_HASHES["resnet50"][1],
        )
    except Exception as e:  # Keras wraps every network error in a bare Exception
        raise SimlibError(
            "cannot download the ResNet50 ImageNet weights (no network?): "
            "use --weights none for an untrained backbone, or --weights PATH for a local .h5 file"
            f" [{type(e).__name__}: {str(e)[:100]}]"
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def build_embedding_model(config: ModelConfig | None = None, **overrides: Any):
    """Build the embedding model.

    Args:
        config: the model configuration; ``config.weights`` must already be resolved
            ("imagenet", "none" or a file path; see :func:`resolve_weights`).
        **overrides: fields to change in ``config`` (e.g. ``image_size=32``).

    Returns:
        A Keras functional model mapping (B, S, S, 3) float images in [0, 255] to
        (B, embedding_dim) unit vectors. Its ``backbone`` layer is named "resnet50".
    """
    import keras

    config = ModelConfig(**{**to_dict(config or ModelConfig()), **overrides})
    if config.weights == "auto":
        config = ModelConfig(**{**to_dict(config), "weights": resolve_weights("auto")})
    layers = _custom_layers()
    keras.utils.set_random_seed(config.seed)
    # Keras reads the dtype policy when each layer is created: set it for this build only.
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        model = _build(config, layers)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model.simlib_config = config
    return model


def _build(config: ModelConfig, layers: dict[str, Any]):
    import keras

    s = config.image_size
    weights = None if config.weights == "none" else config.weights
    inputs = keras.Input((s, s, 3), name="image")
    x = layers["ResNetPreprocess"](name="preprocess")(inputs)
    try:
        backbone = keras.applications.ResNet50(include_top=False, weights=weights, input_shape=(s, s, 3))
    except SimlibError:
        raise
    except Exception as e:
        if weights == "imagenet":
            raise SimlibError(
                "cannot load the ResNet50 ImageNet weights: use --weights none or --weights PATH"
                f" [{type(e).__name__}: {str(e)[:100]}]"
            ) from None
        raise SimlibError(f"cannot load backbone weights from {weights}: {str(e)[:200]}") from None
    backbone.name = BACKBONE_NAME
    x = backbone(x)
    pool = keras.layers.GlobalAveragePooling2D if config.pooling == "avg" else keras.layers.GlobalMaxPooling2D
    x = pool(name="pool")(x)
    if config.head_norm:
        # identity until training adapts it to the training images' feature statistics
        x = keras.layers.Normalization(axis=-1, name="feature_norm")(x)
    if config.head_hidden:
        x = keras.layers.Dense(
            config.head_hidden,
            activation="relu",
            kernel_initializer=keras.initializers.HeUniform(seed=config.seed),
            name="head_hidden",
        )(x)
    # Orthogonal projection keeps the angles of the pooled features as far as 128 dims allow,
    # so an untrained head is already a sensible embedding.
    x = keras.layers.Dense(
        config.embedding_dim,
        use_bias=False,
        kernel_initializer=keras.initializers.Orthogonal(seed=config.seed),
        name="projection",
    )(x)
    outputs = layers["L2Normalize"](name="l2_normalize", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="simlib_embedding")


def model_config(model) -> ModelConfig:
    """The :class:`ModelConfig` a simlib model was built or loaded with."""
    config = getattr(model, "simlib_config", None)
    if config is None:
        raise SimlibError("this Keras model was not built by simlib (no simlib_config)")
    return config


def model_fingerprint(model) -> str:
    """A short hash of the model's weights and config: two models embed alike iff these match."""
    h = hashlib.sha256()
    h.update(repr(sorted(to_dict(model_config(model)).items(), key=lambda kv: kv[0])).encode())
    for w in model.weights:
        h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    return h.hexdigest()[:16]


def save_model(model, directory: str | os.PathLike) -> Path:
    """Save a simlib model as ``directory/model.keras`` + ``config.json``, replacing it atomically."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        model.save(tmp / MODEL_FILE)
        meta = {"config": to_dict(model_config(model)), "fingerprint": model_fingerprint(model)}
        save_json(tmp / CONFIG_FILE, meta)
    return directory


def load_model(directory: str | os.PathLike):
    """Load a model saved by :func:`save_model` (safe mode: no arbitrary code is deserialised)."""
    import keras

    directory = Path(directory)
    if not (directory / MODEL_FILE).is_file():
        raise SimlibError(f"{directory} is not a simlib model folder (no {MODEL_FILE}); train or index first")
    meta = load_json(directory / CONFIG_FILE)
    try:
        config = from_dict(ModelConfig, dict(meta["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise SimlibError(f"{directory / CONFIG_FILE} is damaged ({type(e).__name__}: {e}); save it again") from None
    _custom_layers()
    try:
        model = keras.saving.load_model(directory / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as e:
        raise SimlibError(f"cannot load the model in {directory}: {type(e).__name__}: {str(e)[:200]}") from None
    model.simlib_config = config
    return model


def bfloat16_supported() -> bool:
    """True when bfloat16 maths runs natively: a GPU, or a CPU with AVX-512 BF16 or AMX-BF16.

    Elsewhere TensorFlow emulates bfloat16 and ``precision="mixed_bfloat16"`` is slower than float32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    if {"avx512_bf16", "amx_bf16"} & set(flags):
        return True
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def with_precision(model, precision: str):
    """The same model computing in ``precision`` ("float32" or "mixed_bfloat16"), sharing no state.

    Returns ``model`` itself when it already has that precision. Weights are float32 under both
    policies, so they are copied unchanged.
    """
    config = model_config(model)
    if config.precision == precision:
        return model
    twin = build_embedding_model(dataclasses.replace(config, precision=precision, weights="none"))
    twin.set_weights(model.get_weights())
    twin.simlib_config = dataclasses.replace(config, precision=precision)
    return twin
