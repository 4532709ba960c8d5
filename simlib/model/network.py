"""The two Keras sub-models of an embedding: a backbone (image -> feature map) and a head
(feature map -> unit vector).

Only this module knows the layers' names; the rest of simlib goes through the functions here,
so the trainer and the explanation need no layer-name contract.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simlib.config import ModelConfig
from simlib.errors import SimlibError
from simlib.model.weights import imagenet_weights_cached, imagenet_weights_file, resolve_weights

# Stage outputs of each backbone, shallow to deep (the explanation picks one by its map size).
STAGE_LAYERS = {
    "resnet50": ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    "tiny": ("tiny_conv1", "tiny_conv2"),
}
_LAYERS: dict[str, Any] = {}


def custom_layers() -> dict[str, Any]:
    """Define and register simlib's Keras layers once, on first use (keeps ``import simlib`` cheap)."""
    if _LAYERS:
        return _LAYERS
    import keras  # lazy: Keras

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


def build_backbone(config: ModelConfig):
    """The backbone: float RGB images in [0, 255], (B, S, S, 3) -> feature maps (B, h, w, c).

    Preprocessing is a layer inside it, so a saved model carries it along. ``config.weights``
    must be resolved ("imagenet", "none" or a file path).
    """
    import keras  # lazy: Keras

    layers = custom_layers()
    s = config.image_size
    image = keras.Input((s, s, 3), name="image")
    if config.backbone == "tiny":
        # Two strided convolutions: a real CNN for the fast tests and quick experiments, not for quality.
        x = keras.layers.Rescaling(1 / 127.5, -1.0, name="tiny_scale")(image)
        for i, width in enumerate((16, 32)[: len(stage_layers(config))], 1):
            x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name=f"tiny_conv{i}")(x)
        return keras.Model(image, x, name="backbone")
    weights = None if config.weights == "none" else config.weights
    if weights == "imagenet":
        # Load the cached file by its path: resolve_weights downloaded it (with Keras' own hash check)
        # if it was missing, and reading it from the cache needs no network.
        if not imagenet_weights_cached():
            resolve_weights("imagenet")
        weights = str(imagenet_weights_file())
    x = layers["ResNetPreprocess"](name="preprocess")(image)
    try:
        resnet = keras.applications.ResNet50(include_top=False, weights=weights, input_tensor=x)
    except Exception as e:
        if config.weights == "imagenet":
            raise SimlibError(
                "cannot load the ResNet50 ImageNet weights: use --weights none or --weights PATH"
                f" [{type(e).__name__}: {str(e)[:100]}]"
            ) from None
        raise SimlibError(f"cannot load backbone weights from {weights}: {str(e)[:200]}") from None
    # an earlier stage: the layers after it are left out of the backbone (and of its cost)
    return keras.Model(image, resnet.get_layer(stage_layers(config)[-1]).output, name="backbone")


def build_head(config: ModelConfig, feature_shape: tuple[int, ...]):
    """The head: feature maps -> L2-normalised embeddings (float32 whatever the precision policy)."""
    import keras  # lazy: Keras

    layers = custom_layers()
    maps = keras.Input(feature_shape, name="feature_map")
    if config.pooling == "grid":
        h, w = feature_shape[:2]
        g = max(1, min(config.grid_size, h, w))
        x = keras.layers.AveragePooling2D((h // g, w // g), name="grid_cells")(maps)
        x = keras.layers.Flatten(name="pool")(x)
    else:
        pool = keras.layers.GlobalAveragePooling2D if config.pooling == "avg" else keras.layers.GlobalMaxPooling2D
        x = pool(name="pool")(maps)
    if config.head_norm:
        # identity until training adapts it to the training images' feature statistics
        x = keras.layers.Normalization(axis=-1, name="feature_norm")(x)
    if config.head_pca:
        # a whitened PCA, fitted (not trained) on the training images' features by adapt_head
        x = keras.layers.Dense(config.head_pca, trainable=False, name="pca")(x)
    if config.head_hidden:
        x = keras.layers.Dense(
            config.head_hidden,
            activation="relu",
            kernel_initializer=keras.initializers.HeUniform(seed=config.seed),
            name="head_hidden",
        )(x)
    # Orthogonal projection keeps the angles of the pooled features as far as the dimension allows,
    # so an untrained head is already a sensible embedding; after a PCA it starts as the identity on
    # the leading components.
    init = "identity" if config.head_pca and not config.head_hidden else keras.initializers.Orthogonal(seed=config.seed)
    x = keras.layers.Dense(config.embedding_dim, use_bias=False, kernel_initializer=init, name="projection")(x)
    outputs = layers["L2Normalize"](name="l2_normalize", dtype="float32")(x)
    return keras.Model(maps, outputs, name="head")


def split_head(head):
    """The head as ``(pool, rest)``: a parameter-free pooling model (feature maps -> pooled features)
    and the trainable rest (pooled features -> embedding), sharing the head's layers.

    Training ``rest`` on cached pooled features trains the head itself.
    """
    import keras  # lazy: Keras

    pool_layer = head.get_layer("pool")
    pool = keras.Model(head.input, pool_layer.output, name="head_pool")  # one tensor in, not a list of one
    pooled = keras.Input(tuple(pool_layer.output.shape[1:]), name="pooled_features")
    x = pooled
    for layer in head.layers[head.layers.index(pool_layer) + 1 :]:
        x = layer(x)
    return pool, keras.Model(pooled, x, name="head_rest")


def split_trainable(rest):
    """The head's rest (pooled features -> embedding, from :func:`split_head`) as ``(fixed, tail)``.

    ``fixed`` is its leading layers without trainable weights (the fitted standardisation and PCA), or
    None when there are none; ``tail`` starts at the first layer that trains. ``tail(fixed(x))`` is
    ``rest(x)``, and both share ``rest``'s layers. Training ``tail`` on ``fixed``'s outputs, computed once,
    trains the same head on far smaller inputs (512 PCA components instead of 16,384 grid features).
    """
    import keras  # lazy: Keras

    layers = [layer for layer in rest.layers if not isinstance(layer, keras.layers.InputLayer)]
    n_fixed = 0
    while n_fixed < len(layers) - 1 and not layers[n_fixed].trainable_weights:
        n_fixed += 1
    fixed = None
    x = inputs = keras.Input(tuple(rest.input.shape[1:]), name="pooled_features")
    if n_fixed:
        for layer in layers[:n_fixed]:
            x = layer(x)
        fixed = keras.Model(inputs, x, name="head_fixed")
        x = keras.Input(tuple(x.shape[1:]), name="fixed_features")
    tail_in = x
    for layer in layers[n_fixed:]:
        x = layer(x)
    return fixed, keras.Model(tail_in, x, name="head_tail")


# PCA is fitted on at most this many training images (the Gram matrix is n x n).
PCA_MAX_ROWS = 6000


def head_needs_adapting(config: ModelConfig) -> bool:
    """Whether the head has statistics to fit on training features before training."""
    return bool(config.head_norm or config.head_pca)


def adapt_head(head, pooled, seed: int = 0) -> None:
    """Fit the head's statistics to pooled training features: the standardisation (``head_norm``)
    and the whitened PCA (``head_pca``); no-op for a head without them.

    The PCA keeps the leading components of the standardised features and scales each by
    ``1 / sqrt(variance + mean variance)``: whitening, shrunk so that weak directions are not blown up.
    """
    names = {layer.name for layer in head.layers}
    if "feature_norm" in names:
        head.get_layer("feature_norm").adapt(pooled)
    if "pca" not in names:
        return
    x = np.asarray(pooled, np.float32)
    if len(x) > PCA_MAX_ROWS:
        x = x[np.sort(np.random.default_rng(seed).permutation(len(x))[:PCA_MAX_ROWS])]
    if "feature_norm" in names:
        x = np.asarray(head.get_layer("feature_norm")(x))
    pca = head.get_layer("pca")
    k = pca.units
    if len(x) <= k:
        raise SimlibError(f"a {k}-component PCA needs more than {k} training images ({len(x)} given)")
    mean = x.mean(axis=0, dtype=np.float64)
    # float32 for the two n x d products (the cost; a float64 copy of the features was most of it), float64 for
    # the small n x n eigenproblem
    centred = np.asarray(x, np.float32) - mean.astype(np.float32)
    # eigenvectors of the n x n Gram matrix give the principal axes without a d x d covariance
    eigval, u = np.linalg.eigh((centred @ centred.T).astype(np.float64))
    order = np.argsort(eigval)[::-1][:k]
    eigval, u = np.maximum(eigval[order], 1e-12), u[:, order]
    axes = centred.T @ (u / np.sqrt(eigval)).astype(np.float32)  # (d, k), unit columns
    variance = eigval / len(x)
    scale = np.sqrt(variance + variance.mean())
    kernel = (axes / scale).astype(np.float32)
    pca.set_weights([kernel, (-(mean @ kernel)).astype(np.float32)])


def linear_projection(head):
    """The projection matrix (c, d) when the head is pooling followed by one linear map, else None.

    Then the embedding's dot product splits exactly into per-cell shares (see :mod:`simlib.search.explain`).
    """
    import keras  # lazy: Keras

    names = {layer.name for layer in head.layers}
    if names & {"feature_norm", "head_hidden", "pca"}:
        return None
    if not isinstance(head.get_layer("pool"), keras.layers.GlobalAveragePooling2D):
        return None  # the shares add up only for a mean over the cells
    return np.asarray(head.get_layer("projection").kernel, np.float64)


def stage_layers(config: ModelConfig) -> tuple[str, ...]:
    """The backbone's stage-output layer names, shallow to deep, up to the stage the head reads."""
    stages = STAGE_LAYERS[config.backbone]
    if not config.feature_stage:
        return stages
    first = 2 if config.backbone == "resnet50" else 1
    return stages[: config.feature_stage - first + 1]


# Prefix of the layers of each backbone's last stage (what ``backbone="partial"`` trains).


def set_backbone_trainable(backbone, config: ModelConfig, which: str) -> None:
    """Mark the backbone's layers trainable for fine-tuning.

    Args:
        backbone: the embedder's backbone.
        config: its config (which backbone it is).
        which: "all" (every layer) or "last" (the last stage only; its batch-normalisation layers
            stay frozen so that their statistics do not drift in a mostly frozen network).
    """
    if which not in ("all", "last"):
        raise SimlibError(f"which must be 'all' or 'last', not {which!r}")
    last = stage_layers(config)[-1]  # e.g. conv5_block3_out: its stage's layers start with conv5_
    prefix = last.split("_")[0] + "_" if config.backbone == "resnet50" else last
    for layer in backbone.layers:
        layer.trainable = which == "all" or (layer.name.startswith(prefix) and "_bn" not in layer.name)


def set_weights(model, weights) -> None:
    """``model.set_weights`` that also refreshes what Keras derives from weights.

    A ``Normalization`` layer computes its mean and variance from its weights only when adapted or
    loaded from a file, so after ``set_weights`` it would keep using the old statistics.
    """
    import keras  # lazy: Keras

    model.set_weights(weights)
    for layer in getattr(model, "layers", [model]):
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()


def copy_legacy_weights(legacy, backbone, head) -> None:
    """Fill a backbone and head from a model saved by simlib 0.1 (one flat model with a nested
    ``resnet50`` layer), so model folders written before the split still load."""
    resnet = legacy.get_layer("resnet50")
    for layer in resnet.layers:
        if layer.weights:
            backbone.get_layer(layer.name).set_weights(layer.get_weights())
    legacy_names = {layer.name for layer in legacy.layers}
    for layer in head.layers:
        if layer.weights:
            if layer.name not in legacy_names:
                raise SimlibError(f"the saved model has no {layer.name!r} layer that its config.json promises")
            set_weights(layer, legacy.get_layer(layer.name).get_weights())
