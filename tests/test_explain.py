"""Similarity heat maps: shape, range, and that they point at what the two images share."""

import numpy as np
import pytest
from PIL import Image

from simlib.data import resize_image
from simlib.errors import SimlibError
from simlib.search.explain import explain_layer, overlay, similarity_maps

pytestmark = pytest.mark.integration  # every test reads a ResNet50's feature maps (tiny_model)


def pasted_pair(seed: int, size: int = 32):
    """One random textured object pasted into a plain and a noisy background at different places."""
    rng = np.random.default_rng(seed)
    o = size * 3 // 8
    cells = rng.integers(0, 2, (o // 2, o // 2, 1)) * rng.integers(0, 256, 3)
    obj = np.kron(cells, np.ones((2, 2, 1))).astype(np.uint8)
    images, masks = [], []
    for background in ("plain", "noise"):
        if background == "plain":
            img = np.full((size, size, 3), rng.integers(150, 230), np.uint8)
        else:
            img = rng.integers(100, 200, (size, size, 3)).astype(np.uint8)
        y, x = rng.integers(0, size - o, 2)
        img[y : y + o, x : x + o] = obj
        mask = np.zeros((size, size), bool)
        mask[y : y + o, x : x + o] = True
        images.append(img)
        masks.append(mask)
    return images, masks


def test_maps_have_the_image_shape_and_range(tiny_model, small_table):
    query, result = small_table.paths[0], small_table.paths[7]
    w, h = Image.open(query).size
    for method in ("features", "gradcam"):
        qmap, rmap = similarity_maps(tiny_model, query, result, method=method)
        assert qmap.shape == (h, w) and rmap.shape == Image.open(result).size[::-1]
        for m in (qmap, rmap):
            assert m.dtype == np.float32
            assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
        assert qmap.max() == pytest.approx(1.0)
    shown = overlay(query, qmap)
    assert shown.shape == (h, w, 3) and shown.dtype == np.uint8
    assert not np.array_equal(shown, np.asarray(Image.open(query).convert("RGB")))
    with pytest.raises(SimlibError, match="method"):
        similarity_maps(tiny_model, query, result, method="magic")


def test_padding_is_cut_off_the_map(tiny_model):
    # A wide image reaches the model padded top and bottom to a square (white bars); its map must be the
    # picture's band of the square's map only, not the whole square squeezed into the picture's shape.
    wide = np.full((8, 32, 3), 200, np.uint8)
    wide[:, 12:20] = (255, 0, 0)
    square = resize_image(Image.fromarray(wide), 32, "pad")  # exactly what the model sees
    assert (square[:12] == 255).all() and (square[20:] == 255).all() and (square[12:20] == wide).all()
    qmap, _ = similarity_maps(tiny_model, wide, wide)
    full, _ = similarity_maps(tiny_model, square, square)  # the same input, mapped over the whole square
    assert qmap.shape == (8, 32)
    assert max(full[:12].max(), full[20:].max()) > 0.05  # the bars got heat: a map that kept them would differ
    band = full[12:20]
    np.testing.assert_allclose(qmap, band / band.max(), atol=1e-5)


def test_maps_heat_the_shared_object_more_than_the_backgrounds(tiny_model):
    assert explain_layer(tiny_model) == "conv2_block3_out"  # 8x8 cells at 32 px
    for seed in range(4):
        (q, r), (qmask, rmask) = pasted_pair(seed)
        qmap, rmap = similarity_maps(tiny_model, q, r)
        for heat, mask in ((qmap, qmask), (rmap, rmask)):
            # mean heat per pixel on the object vs on the background
            assert heat[mask].mean() > 1.15 * heat[~mask].mean(), seed
