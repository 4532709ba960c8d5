"""Why are two images similar: heat maps over the query and the result.

The default method ("features") splits the similarity between the cells of the two feature
maps. With average pooling the pooled feature is the mean of the cell features, so the dot
product of the two pooled vectors is a sum of per-cell shares:
``<mean_i f_q(i), mean_j f_r(j)> = mean_i <f_q(i), mean_j f_r(j)>``. The query's map is
``<f_q(i), mean_j f_r(j)>`` at every cell ``i`` (and symmetrically for the result): a cell is
hot when its features point where the *other* image's features point (Stylianou et al.,
"Visualizing Deep Similarity Networks", 2019). At the backbone's last block the features are
first projected through the model's ``projection`` head, so the shares add up exactly to the
(unnormalised) embedding similarity. Small inputs give a tiny last map (1x1 at 32 px, 2x2 at
64 px), so the deepest ResNet stage whose map is at least :data:`MIN_CELLS` wide is used
instead, with its raw channels. This method needs no gradient and works with an untrained
backbone (tested: on an object pasted into two different backgrounds it heats the object).

"gradcam" is Grad-CAM on the similarity: the gradient of ``cos(e_q, e_r)`` with respect to the
chosen feature map, averaged per channel, weights the channels. It is the better-known method
but meaningless with random weights (its test only checks shape and range).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from PIL import Image

from simlib.data import open_image, resize_image
from simlib.errors import SimlibError
from simlib.model import Embedder
from simlib.model.network import linear_projection, stage_layers

MIN_CELLS = 7
METHODS = ("features", "gradcam")
# explanation networks per embedder and layer, dropped with the embedder
_NETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def explain_layer(embedder: Embedder, min_cells: int = MIN_CELLS) -> str:
    """The deepest backbone stage output whose feature map is at least ``min_cells`` wide (else the shallowest)."""
    stages = stage_layers(embedder.config)
    for name in reversed(stages):
        if min(embedder.backbone.get_layer(name).output.shape[1:3]) >= min_cells:
            return name
    return stages[0]


def _feature_model(embedder: Embedder, layer: str):
    """A model from images to (feature map at ``layer``, embedding), built once per embedder and layer."""
    nets = _NETS.setdefault(embedder, {})
    if layer not in nets:
        import keras  # lazy: Keras

        backbone = embedder.backbone
        inner = keras.Model(backbone.inputs, [backbone.get_layer(layer).output, backbone.output])
        image = keras.Input(backbone.inputs[0].shape[1:])
        fmap, last = inner(image)
        nets[layer] = keras.Model(image, [fmap, embedder.head(last)], name=f"explain_{layer}")
    return nets[layer]


def _cell_maps(embedder: Embedder, batch: np.ndarray, layer: str, method: str) -> np.ndarray:
    """(2, h, w) raw maps for a batch of two prepared uint8 images (query, result)."""
    import tensorflow as tf  # lazy: TensorFlow

    net = _feature_model(embedder, layer)
    x = tf.convert_to_tensor(batch, tf.float32)
    if method == "features":
        fmap, _ = net(x, training=False)
        f = fmap.numpy().astype(np.float64)
        projection = linear_projection(embedder.head)
        if layer == stage_layers(embedder.config)[-1] and projection is not None:
            f = f @ projection  # the shares then sum to the embedding dot product
        pooled = f.mean(axis=(1, 2))
        return np.stack([f[0] @ pooled[1], f[1] @ pooled[0]])
    with tf.GradientTape() as tape:
        fmap, e = net(x, training=False)
        tape.watch(fmap)
        # each image's map comes from the gradient of the similarity with the other held fixed
        sim = tf.reduce_sum(e[0] * tf.stop_gradient(e[1])) + tf.reduce_sum(e[1] * tf.stop_gradient(e[0]))
    grads = tape.gradient(sim, fmap).numpy().astype(np.float64)
    weights = grads.mean(axis=(1, 2), keepdims=True)
    return (weights * fmap.numpy()).sum(-1)


def _to_image_frame(cells: np.ndarray, image_hw: tuple[int, int], size: int, mode: str) -> np.ndarray:
    """Upsample a cell map over the model's square input and map it back onto the original image."""
    h, w = image_hw
    square = np.asarray(
        Image.fromarray(cells.astype(np.float32), "F").resize((size, size), Image.Resampling.BILINEAR), np.float32
    )
    if mode == "pad":  # undo ImageOps.pad: the image is scaled to fit and centred
        ratio = min(size / w, size / h)
        nw, nh = max(1, round(w * ratio)), max(1, round(h * ratio))
        x0, y0 = round((size - nw) * 0.5), round((size - nh) * 0.5)  # as ImageOps.pad centres
        inner = Image.fromarray(square[y0 : y0 + nh, x0 : x0 + nw], "F")
        return np.asarray(inner.resize((w, h), Image.Resampling.BILINEAR), np.float32)
    # crop: the square covers the centred crop of the image; outside it nothing was seen
    side = min(h, w)
    out = np.zeros((h, w), np.float32)
    y0, x0 = (h - side) // 2, (w - side) // 2
    out[y0 : y0 + side, x0 : x0 + side] = np.asarray(
        Image.fromarray(square, "F").resize((side, side), Image.Resampling.BILINEAR), np.float32
    )
    return out


def _normalise(a: np.ndarray) -> np.ndarray:
    a = np.nan_to_num(np.maximum(a, 0.0), nan=0.0, posinf=0.0)
    top = float(a.max()) if a.size else 0.0
    return (a / top if top > 0 else np.zeros_like(a)).astype(np.float32)


def similarity_maps(
    embedder: Embedder,
    query: Any,
    result: Any,
    method: str = "features",
    layer: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Heat maps of the regions that make ``query`` and ``result`` similar.

    Args:
        embedder: the embedding model (the one that built the index).
        query: the query image (path, bytes, PIL image or array).
        result: the result image, same kinds.
        method: "features" (per-cell share of the feature dot product; works untrained) or
            "gradcam" (gradient of the cosine similarity; meaningful with trained weights).
        layer: a backbone layer name; default :func:`explain_layer`.

    Returns:
        ``(query_map, result_map)``: float32 arrays shaped like each original image (H, W),
        in [0, 1] (1 = the strongest region), finite.
    """
    if method not in METHODS:
        raise SimlibError(f"explain method must be one of {', '.join(METHODS)}, not {method!r}")
    cfg = embedder.config
    layer = layer or explain_layer(embedder)
    images = [open_image(query), open_image(result)]
    batch = np.stack([resize_image(img, cfg.image_size, cfg.resize) for img in images])
    cells = _cell_maps(embedder, batch, layer, method)
    maps = [
        _normalise(_to_image_frame(c, (img.height, img.width), cfg.image_size, cfg.resize))
        for c, img in zip(cells, images, strict=True)
    ]
    return maps[0], maps[1]


def overlay(image: Any, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """The image with a heat map blended over it, as an RGB uint8 array for display.

    Args:
        image: the image the map belongs to (path, PIL image or array).
        heat: a map from :func:`similarity_maps`, (H, W) in [0, 1]; resized if it does not fit.
        alpha: opacity of the heat colours at full heat (the colour fades with the heat).
        cmap: a Matplotlib colour map name.
    """
    from matplotlib import colormaps  # lazy: Matplotlib

    rgb = np.asarray(open_image(image), np.float32)
    heat = np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0, 1)
    if heat.shape != rgb.shape[:2]:
        heat = np.asarray(
            Image.fromarray(heat, "F").resize((rgb.shape[1], rgb.shape[0]), Image.Resampling.BILINEAR), np.float32
        )
    colours = colormaps[cmap](heat)[..., :3] * 255.0
    a = (alpha * (0.3 + 0.7 * heat))[..., None]
    return np.clip((1 - a) * rgb + a * colours, 0, 255).astype(np.uint8)


def heat_colours(low: float = 0.0, high: float = 1.0, n: int = 9, cmap: str = "jet") -> list[str]:
    """The colours :func:`overlay` paints for heat values from ``low`` to ``high`` (``n`` evenly spaced stops, as
    ``#rrggbb``): a colour bar true to the maps shown."""
    from matplotlib import colormaps  # lazy: Matplotlib

    values = np.linspace(float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1)), max(2, n))
    rgb = (colormaps[cmap](values)[:, :3] * 255).round().astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


def explain_figure(query: Any, result: Any, maps: tuple[np.ndarray, np.ndarray], score: float | None = None):
    """A 2x2 Matplotlib figure: the two images above, their overlays below (for the CLI and notebooks)."""
    import matplotlib.pyplot as plt  # lazy: Matplotlib

    fig, axes = plt.subplots(2, 2, figsize=(6, 6.4))
    for col, (img, heat, name) in enumerate(zip((query, result), maps, ("query", "result"), strict=True)):
        axes[0, col].imshow(open_image(img))
        axes[0, col].set_title(name)
        axes[1, col].imshow(overlay(img, heat))
        axes[1, col].set_title(f"{name}: what matches")
    for ax in axes.flat:
        ax.axis("off")
    if score is not None:
        fig.suptitle(f"cosine similarity {score:.3f}")
    fig.tight_layout()
    return fig
