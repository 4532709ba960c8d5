"""Model folders in the layout simlib 0.1 wrote (one flat Keras model), to test that they still load."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_legacy_model(directory: Path, config, seed: int = 0) -> np.ndarray:
    """Write a simlib-0.1 model folder (``model.keras`` with a nested ``resnet50`` layer, ``config.json``
    with its fingerprint) and return its embeddings of a fixed probe batch, computed by that model."""
    import hashlib

    import keras

    from simlib.config import to_dict
    from simlib.model.network import custom_layers
    from simlib.storage import save_json

    layers = custom_layers()
    keras.utils.set_random_seed(config.seed)
    s = config.image_size
    inputs = keras.Input((s, s, 3), name="image")
    x = layers["ResNetPreprocess"](name="preprocess")(inputs)
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(s, s, 3))
    backbone.name = "resnet50"
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(x))
    if config.head_norm:
        x = keras.layers.Normalization(axis=-1, name="feature_norm")(x)
    if config.head_hidden:
        x = keras.layers.Dense(config.head_hidden, activation="relu", name="head_hidden")(x)
    x = keras.layers.Dense(config.embedding_dim, use_bias=False, name="projection")(x)
    model = keras.Model(inputs, layers["L2Normalize"](name="l2_normalize")(x), name="simlib_embedding")
    rng = np.random.default_rng(seed)
    if config.head_norm:  # statistics a trained model would carry
        model.get_layer("feature_norm").adapt(rng.random((16, 2048)).astype("float32"))
    directory.mkdir(parents=True)
    model.save(directory / "model.keras")
    h = hashlib.sha256()
    h.update(repr(sorted(to_dict(config).items(), key=lambda kv: kv[0])).encode())
    for w in model.weights:
        h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    save_json(directory / "config.json", {"config": to_dict(config), "fingerprint": h.hexdigest()[:16]})
    return np.asarray(model(probe_batch(s), training=False))


def probe_batch(size: int) -> np.ndarray:
    """Three fixed float32 images of side ``size``."""
    return np.random.default_rng(123).integers(0, 256, (3, size, size, 3)).astype("float32")
