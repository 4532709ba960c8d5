"""Shared test helpers, one module per theme (fixtures stay in ``tests/conftest.py``).

- :mod:`tests.support.vectors`: synthetic unit vectors, the brute-force reference, stratified rows.
- :mod:`tests.support.galleries`: labelled image folders (real or synthetic images), small test ModelConfigs.
- :mod:`tests.support.servers`: a free port, the demo app served for a test.
- :mod:`tests.support.cli`: the command line run in-process (and once as a real process).

Nothing here imports TensorFlow, Keras, FAISS or Gradio at import time.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"  # screenshots and logs a test wants kept
