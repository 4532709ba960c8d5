"""Shared fixtures: real data from $SIMLIB_DATA, small real models, isolated caches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"  # screenshots and logs a test wants kept

# Isolate every cache before TensorFlow or Keras is imported by any test module.
_TMP_HOME = Path(os.environ.get("PYTEST_SIMLIB_HOME", "/tmp/simlib-test-home"))
os.environ.setdefault("KERAS_HOME", str(_TMP_HOME / "keras"))
os.environ.setdefault("SIMLIB_CACHE", str(_TMP_HOME / "cache"))
os.environ.setdefault("GRADIO_TEMP_DIR", str(_TMP_HOME / "gradio"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")


def _find_data() -> Path | None:
    from simlib.data import find_data_root

    return find_data_root()


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data root ($SIMLIB_DATA, ./data or ../shared/data)."""
    root = _find_data()
    if root is None or not (root / "fashion-product-images-small" / "styles.csv").is_file():
        msg = "no data: set SIMLIB_DATA to the folder holding fashion-product-images-small"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def product_dir(data_root: Path) -> Path:
    return data_root / "fashion-product-images-small"


@pytest.fixture(scope="session")
def product_table(product_dir: Path):
    from simlib.data import load_product_set

    return load_product_set(product_dir)


def structured(n, d=32, rank=8, noise=0.1, seed=0):
    """Low-rank plus noise unit vectors: realistic for recall tests (isotropic noise makes recall meaningless)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d)) + noise * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(x, q, k, allowed=None):
    """Exact top-k by inner product (``allowed``: a boolean mask of usable rows): the reference for indexes."""
    s = q @ x.T
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


def stratified_rows(labels: np.ndarray, n_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    """Rows of the ``n_classes`` largest classes, ``per_class`` each (deterministic)."""
    from simlib.data import ImageTable, sample_per_class

    table = ImageTable(ids=np.arange(len(labels)), arrays=np.zeros((len(labels), 1, 1), np.uint8), labels=labels)
    return sample_per_class(table, n_classes, per_class, seed).ids


@pytest.fixture(scope="session")
def small_table(product_table):
    """48 real product images: 8 classes x 6."""
    return product_table.subset(stratified_rows(product_table.labels, 8, 6))


@pytest.fixture(scope="session")
def tiny_model():
    """An untrained 32 px embedding model (weights=None): fast and fully real."""
    from simlib.config import ModelConfig
    from simlib.model import build_embedding_model

    return build_embedding_model(ModelConfig(image_size=32, embedding_dim=32, weights="none", seed=0))


@pytest.fixture(scope="session")
def small_index_dir(tmp_path_factory, tiny_model, small_table) -> Path:
    """A real index folder over ``small_table`` built by ``tiny_model``."""
    from simlib.search import Searcher

    searcher, _ = Searcher.from_table(tiny_model, small_table, progress=False)
    return searcher.save(tmp_path_factory.mktemp("idx") / "index")


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m simlib ARGS`` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "simlib", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
