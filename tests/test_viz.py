"""Plot helpers draw what they are given."""

from __future__ import annotations

import numpy as np
from PIL import Image


def test_image_grid_lays_out_images_and_titles():
    from simlib.viz import image_grid

    images = [np.full((8, 8, 3), v, np.uint8) for v in (0, 100, 200, 255, 50)]
    fig = image_grid(images, titles=list("abcde"), ncols=2)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 6 and len(shown) == 5
    assert [ax.get_title() for ax in shown] == list("abcde")
    np.testing.assert_array_equal(shown[1].images[0].get_array(), images[1])


def test_triplet_history_and_comparison_plots(tmp_path):
    from simlib.viz import plot_comparison, plot_history, triplet_grid

    triplets = np.zeros((2, 3, 8, 8, 3), np.uint8)
    fig = triplet_grid(triplets, labels=[["a", "a", "b"], ["c", "c", "d"]])
    assert [ax.get_title() for ax in fig.axes][:3] == ["anchor: a", "positive: a", "negative: b"]
    history = {"epoch": [1, 2], "loss": [0.2, 0.1], "val_recall@1": [0.5, 0.6], "probe_mean_cosine": [0.5, 0.3]}
    fig = plot_history(history)
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 1
    rows = [
        {"split": "image", "method": "pixels", "recall@1": 0.58},
        {"split": "image", "method": "trained", "recall@1": 0.70},
    ]
    fig = plot_comparison(rows)
    ax = fig.axes[0]
    assert [round(bar.get_height(), 2) for bar in ax.patches] == [0.58, 0.70]  # one bar per method
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pixels", "trained"]
    fig.savefig(tmp_path / "cmp.png", dpi=100)
    png = Image.open(tmp_path / "cmp.png")
    assert png.format == "PNG" and png.size == (420, 340)  # figsize (2.2 x 1 split + 2, 3.4) inches at 100 dpi
    pixels = np.asarray(png.convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in pixels}
    assert len(colours) > 20  # text, axes and bars, not a blank canvas
    # both bars are drawn in the first two colours of Matplotlib's cycle, each a visible area
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        assert (pixels == colour).all(axis=1).sum() > 500, colour
