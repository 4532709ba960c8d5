"""Photo folders for the tests of ``simlib.photos``: source images, a tiny model saved to a folder, a killable run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support import REPO
from tests.support.galleries import model_config, synthetic_image

# The two-convolution backbone: the fast tier's real model.
TINY_PHOTOS = {"backbone": "tiny", "embedding_dim": 16}


def tiny_config():
    """The ``ModelConfig`` the photo tests index with."""
    return model_config(**TINY_PHOTOS)


def product_like_sources(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` small PNGs: a coloured, noisy block on white (a product photo's layout), one colour per image."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = np.full((80, 60, 3), 255, np.uint8)
        rng = np.random.default_rng([seed, i])
        top, left = int(rng.integers(5, 25)), int(rng.integers(3, 15))
        img[top : top + 50, left : left + 40] = synthetic_image(i, seed, size=(40, 50))
        path = folder / f"src{i}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths


INDEX_SCRIPT = """
import sys
from simlib.model import Embedder
from simlib.photos.build import index_folder
from tests.support.photos import tiny_config
index_folder(Embedder.build(tiny_config()), sys.argv[1], sys.argv[2], batch_size=8, chunk_size=16, progress=False)
print("finished")
"""


def run_index_killed_at(data: Path, out: Path, stage: str, timeout: float = 180) -> str:
    """Run :func:`simlib.photos.build.index_folder` in a fresh process, SIGKILL it when it reaches ``stage``
    (a ``SIMLIB_TEST_PAUSE_AT`` pause point); returns its stderr up to then."""
    env = {**os.environ, "SIMLIB_TEST_PAUSE_AT": stage, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-c", INDEX_SCRIPT, str(data), str(out)],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if f"paused at {stage}" in line:
                proc.send_signal(signal.SIGKILL)
                break
            if time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    text = "".join(lines)
    if f"paused at {stage}" not in text:
        raise AssertionError(f"the run never reached {stage}:\n{text[-3000:]}")
    return text
