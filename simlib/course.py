"""What every notebook of the course does the same way: a quiet TensorFlow, the dataset, the weights
banner, paths printed relative to the course, and the notebook's own run time.

Used by ``notebooks/01``-``06`` only; nothing here is needed to use simlib as a library.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

# the measured cost of ResNet50 at each side, relative to 64 px (README "Default image size")
COST_VS_64 = {96: 1.6, 128: 2.7, 224: 7.6}


def quiet_tensorflow() -> None:
    """Import TensorFlow without its C++ start-up lines (absl, oneDNN: they bypass Python and
    ``TF_CPP_MIN_LOG_LEVEL``) and without tf.function retracing notices."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)
    # set after the import: in an interactive kernel TensorFlow sets its logger to INFO when it creates it
    tf.get_logger().setLevel(logging.ERROR)


class Course:
    """One notebook's run: its dataset, weights, artifacts folder, clock and feature cache.

    The course switches simlib's feature cache on under ``ARTIFACTS/features`` (:mod:`simlib.model.features`):
    each image goes through the frozen backbone once per course run, whichever notebook asks first.

    Args:
        smoke: the test suite's tiny run (6 classes × 8 images at 32 px).
        data_dir: the ``DATA_DIR`` parameter (None: the default data root, else Fashion-MNIST).
        image_size: the ``IMAGE_SIZE`` parameter (32 in smoke mode).
        weights: the ``WEIGHTS`` parameter, resolved here once ("auto" becomes "imagenet" or "none").
        artifacts: the ``ARTIFACTS`` folder (created).
        seed: the ``SEED`` parameter.
    """

    def __init__(self, smoke: bool, data_dir, image_size: int, weights: str, artifacts, seed: int = 0) -> None:
        from simlib.model import resolve_weights
        from simlib.model.features import use_feature_cache

        self.t0 = time.perf_counter()
        self.smoke = bool(smoke)
        self.image_size = 32 if smoke else int(image_size)
        self.seed = seed
        self.data_dir = data_dir
        self.artifacts = course_path(artifacts)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.weights = resolve_weights(weights, warn=False)
        self.features = use_feature_cache(self.artifacts / "features")
        self._table = None

    @property
    def table(self):
        """The dataset (smoke: 6 classes × 8 images); in-memory Fashion-MNIST is written as PNGs once."""
        if self._table is None:
            from simlib.data import cache_dir, default_data_spec, load_dataset, materialize, sample_per_class

            table = load_dataset(self.data_dir or default_data_spec())
            if self.smoke:
                table = sample_per_class(table, n_classes=6, per_class=8, seed=self.seed)
            if table.paths is None:  # every image needs a file to show and to index
                table = materialize(table, cache_dir() / "fashion-mnist-course")
            self._table = table
        return self._table

    @property
    def name(self) -> str:
        """The dataset's name without the machine's folders (``product set fashion-product-images-small ...``)."""
        return re.sub(r"(?:[A-Za-z]:)?[/\\][^\s()]+", lambda m: Path(m.group(0)).name, self.table.name)

    def describe(self) -> str:
        t = self.table
        n_classes = len(set(t.labels)) if t.has_labels else 0
        return f"{self.name}: {len(t):,} images, {n_classes} classes, {self.image_size} px"

    def banner(self) -> Any:
        """The weights in use and what they mean for the numbers, as Markdown (display it)."""
        from IPython.display import Markdown

        return Markdown(weights_banner(self.weights, self.image_size))

    def rel(self, path) -> str:
        """A path as the learner should read it: relative to the notebooks folder when it is inside
        the course's folders, else its name under the artifacts folder."""
        return relative_path(path, self.artifacts)

    def took(self) -> str:
        """How long this notebook took from its setup cell (the kernel's start and imports come on top)."""
        cache = self.features
        return (
            f"this notebook took {time.perf_counter() - self.t0:.0f} s from its setup cell "
            f"({self.describe()}, weights {self.weights}); backbone features: {cache.misses:,} images computed, "
            f"{cache.hits:,} taken from the course's feature cache"
        )


def weights_banner(weights: str, image_size: int) -> str:
    """What the resolved ``weights`` mean for the numbers a notebook prints (Markdown)."""
    if weights == "none":
        return (
            "> **Weights in use: none (a random backbone).** Keras could not give the ImageNet weights (no "
            'network), or you asked for `WEIGHTS = "none"`. The backbone\'s features are those of random '
            "convolutions, so simlib trains its grid head (a 4×4 grid of conv4 features, a whitened PCA, one "
            f"linear map) at {image_size} px. Every number below is measured on this run with these weights; "
            "with ImageNet weights simlib uses another head and the numbers differ."
        )
    name = "ImageNet" if weights == "imagenet" else f"a local weights file ({Path(str(weights)).name})"
    advice = (
        f" At {image_size} px much of what ImageNet features see is lost: use `IMAGE_SIZE = 128` "
        f"(about {COST_VS_64[128]}× the time of 64 px) or 224 ({COST_VS_64[224]}×) if you can wait."
        if image_size < 128
        else ""
    )
    return (
        f"> **Weights in use: {name}.** The backbone was trained on ImageNet, so it is called the "
        '*ImageNet backbone* here, never "untrained"; simlib trains its pretrained head on it (global pooling of '
        "conv5, a 512-unit hidden layer, a projection). Every number below is measured on this run with "
        "these weights; statements in the text that were checked with random weights only say so." + advice
    )


def course_path(path) -> Path:
    """A relative ``ARTIFACTS`` path as the notebooks mean it: relative to this checkout's ``notebooks/``
    folder when there is one (so a kernel started elsewhere finds the same folder), else to the current one."""
    p = Path(path).expanduser()
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    if p.is_absolute() or not notebooks.is_dir():
        return p
    return (notebooks / p).resolve()


def relative_path(path, artifacts=None) -> str:
    """``path`` relative to the current folder (the notebooks folder) when below it or its parent,
    else relative to ``artifacts`` as ``<artifacts>/...``; never the machine's absolute path."""
    p = Path(path).resolve()
    here = Path.cwd().resolve()
    for base, prefix in ((here, ""), (here.parent, "../")):
        try:
            return prefix + str(p.relative_to(base))
        except ValueError:
            pass
    if artifacts is not None:
        try:
            return "ARTIFACTS/" + str(p.relative_to(Path(artifacts).resolve()))
        except ValueError:
            pass
    return p.name
