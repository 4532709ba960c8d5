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
    assert png.format == "PNG" and png.size == (440, 360)  # figsize (2.4 x 1 split + 2, 3.6) inches at 100 dpi
    pixels = np.asarray(png.convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in pixels}
    assert len(colours) > 20  # text, axes and bars, not a blank canvas
    # both bars are drawn in the first two colours of Matplotlib's cycle, each a visible area
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        assert (pixels == colour).all(axis=1).sum() > 500, colour


def test_history_plot_names_its_curves_and_marks_the_kept_epoch_the_start_and_the_collapse_thresholds():
    from simlib.viz import plot_history

    history = {"epoch": [1, 2, 3], "loss": [0.3, 0.2, 0.1], "val_recall@1": [0.5, 0.6, 0.55],
               "val_unseen_recall@1": [0.7, 0.8, 0.75], "probe_mean_cosine": [0.1, 0.1, 0.1],
               "probe_spread": [0.9, 0.9, 0.9]}  # fmt: skip
    fig = plot_history(history, best_epoch=2, before={"val_recall@1_before": 0.4, "val_unseen_recall@1_before": 0.6})
    _, val, probe = fig.axes
    labels = [t.get_text() for t in val.get_legend().get_texts()]
    assert "classes held out of training" in labels and "kept epoch (2)" in labels
    assert "before training (epoch 0)" in labels
    assert any(list(line.get_xdata()) == [0] for line in val.lines)  # the before-training points
    assert any(t.get_text() == "collapsed: cosine > 0.9" for t in probe.get_legend().get_texts())
    assert any("spread < 0.2" in t.get_text() for t in probe.get_legend().get_texts())
    self_fig = plot_history({"epoch": [1], "loss": [0.2], "val_recall@1": [0.6]}, mode="self")
    assert "near-duplicate" in self_fig.axes[1].get_title()


def test_differences_plot_shows_each_interval_coloured_by_its_verdict():
    from simlib.viz import plot_differences

    def diff(b, low, high, a="trained"):
        return {"split": "image", "part": "all", "metric": "recall@1", "a": a, "b": b,
                "difference": (low + high) / 2, "low": low, "high": high}  # fmt: skip

    fig = plot_differences([diff("pixels", 0.01, 0.05), diff("untrained backbone", -0.02, 0.03),
                            diff("trained", -0.06, -0.01, a="label-free")])  # fmt: skip
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == ["image: vs label-free", "image: vs untrained backbone", "image: vs pixels"]
    bars = [line for line in ax.lines if len(line.get_xdata()) == 2 and line.get_xdata()[0] != line.get_xdata()[1]]
    # turned round: label-free - trained in [-6, -1] is trained - label-free in [+1, +6]
    assert sorted(tuple(round(x, 1) for x in b.get_xdata()) for b in bars) == [(-2.0, 3.0), (1.0, 5.0), (1.0, 6.0)]
