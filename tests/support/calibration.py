"""A searcher's index calibrated at a chosen score for the length of a test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def calibrated(searcher, score: float) -> Iterator[None]:
    """The searcher's index calibrated at ``score`` (as ``simlib calibrate`` stores it) for a while."""
    from simlib.index import Threshold

    before = searcher.calibration
    searcher.set_threshold(Threshold(score=score, method="test"))
    try:
        yield
    finally:
        searcher.set_threshold(before)
