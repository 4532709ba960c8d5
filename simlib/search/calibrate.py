"""When is a match a match: a "good match" score threshold calibrated on held-out images.

With labels, a validation split of the gallery (image-disjoint, stratified by class) queries
the rest of the gallery; the threshold is the lowest top-1 score at which the top-1 results
scoring at least that much are of the query's class with precision ``target`` (0.9 by
default). Without labels, near-copies stand in for genuine matches: each validation image,
perturbed (crop, flip, brightness, JPEG), queries the gallery it is in, and the threshold is
the ``percentile``-th percentile of the scores of their originals (so about 95 % of genuine
near-copies clear it). The result is a :class:`~simlib.index.Threshold`, which says itself what it
reaches (:meth:`~simlib.index.Threshold.summary`) and whether the model can support it
(:meth:`~simlib.index.Threshold.unsupported_note`); :meth:`simlib.search.Searcher.set_threshold` keeps
it in the index manifest, and hits under it are marked ``weak``.
"""

from __future__ import annotations

import datetime
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from simlib.data import ImageTable, open_image, split_table
from simlib.errors import SimlibError
from simlib.index import Threshold
from simlib.search.tables import index_table

DEFAULT_TARGET = 0.9
DEFAULT_PERCENTILE = 5.0
# With too few queries above a cut-off its precision is noise; never calibrate on fewer.
MIN_SUPPORT = 5
# A cut-off that only a sliver of genuine queries clears says "no good match" to nearly everything: an
# untrained backbone reached 0.9 precision only above 0.9997, which 3 % of its queries cleared. Below this
# share the model cannot support the target and nothing is marked weak.
MIN_COVERAGE = 0.25


def precision_threshold(scores: np.ndarray, correct: np.ndarray, target: float) -> tuple[float, float, bool]:
    """The lowest score ``t`` with precision(correct | score >= t) >= ``target``.

    Args:
        scores: top-1 score of each validation query.
        correct: whether that top-1 result is right (same class).
        target: the precision wanted.

    Returns:
        ``(threshold, precision_above_it, reached)``. When no cut-off with at least
        :data:`MIN_SUPPORT` queries reaches the target, the cut-off of highest precision is
        returned with ``reached=False``.
    """
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    s = np.asarray(scores, np.float64)[order]
    c = np.asarray(correct, bool)[order]
    if len(s) < MIN_SUPPORT:
        raise SimlibError(f"only {len(s)} validation queries: calibration needs at least {MIN_SUPPORT}")
    precision = np.cumsum(c) / np.arange(1, len(c) + 1)
    # a cut-off can only sit where the next score is lower (ties are kept or dropped together)
    valid = np.r_[s[1:] < s[:-1], True] & (np.arange(len(s)) + 1 >= MIN_SUPPORT)
    ok = np.flatnonzero(valid & (precision >= target))
    if len(ok):
        last = int(ok[-1])
        return float(s[last]), float(precision[last]), True
    candidates = np.flatnonzero(valid)
    best = int(candidates[np.argmax(precision[candidates])])
    return float(s[best]), float(precision[best]), False


def perturb(image: Any, seed: int) -> Image.Image:
    """A near-copy of ``image``: random crop (85-100 %), maybe a flip, brightness +-10 %, JPEG quality 70."""
    rng = np.random.default_rng(seed)
    img = open_image(image)
    w, h = img.size
    f = rng.uniform(0.85, 1.0)
    cw, ch = max(1, round(w * f)), max(1, round(h * f))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def calibrate_threshold(
    searcher,
    table: ImageTable | None = None,
    *,
    target: float = DEFAULT_TARGET,
    percentile: float = DEFAULT_PERCENTILE,
    val: float = 0.2,
    seed: int = 0,
    progress: bool | str = False,
) -> Threshold:
    """Calibrate the "good match" threshold of ``searcher``'s index (``searcher.set_threshold`` keeps it).

    Args:
        searcher: a :class:`simlib.search.Searcher`.
        table: images to calibrate with (default: the index's own gallery). Validation images
            that are in the gallery (same id and path) are left out of their own search.
        target: with labels, the top-1 same-class precision the threshold must reach.
        percentile: without labels, the percentile of near-copy scores used as the threshold.
        val: fraction of ``table`` used as validation queries.
        seed: split and perturbation seed.
        progress: show a progress bar while embedding.

    Returns:
        The :class:`~simlib.index.Threshold`: score, method, target or percentile, precision, reached,
        coverage, supported, number of queries, seed, time.
    """
    if not 0 < target <= 1:
        raise SimlibError(f"target precision must be in (0, 1], not {target}")
    table = table if table is not None else index_table(searcher.index, skip_pathless=True)
    labelled = table.has_labels
    queries = split_table(table, seed=seed, val=val, test=0.0, by="image")["val"]
    if len(queries) < MIN_SUPPORT:
        raise SimlibError(
            f"only {len(queries)} validation images out of {len(table)}: calibration needs a larger gallery"
        )
    index = searcher.index
    by_path = {r.path: r.id for r in index.records() if r.path}
    own = [by_path.get(str(Path(queries.paths[r]).resolve())) if queries.paths else None for r in range(len(queries))]
    top_scores, correct = [], []
    if labelled:
        result = searcher.embedder.embed_table(queries, progress=progress)
        scores, ids = index.search(result.embeddings, 2) if len(result.rows) else (np.zeros((0, 2)), None)
        for n, r in enumerate(result.rows):
            # never count a query finding itself
            pairs = [(float(s), int(i)) for s, i in zip(scores[n], ids[n], strict=True) if i >= 0 and i != own[r]]
            if pairs:
                top_scores.append(pairs[0][0])
                correct.append(index.record(pairs[0][1]).label == queries.label(r))
    else:
        rows = [r for r in range(len(queries)) if own[r] is not None]
        if len(rows) < MIN_SUPPORT:
            raise SimlibError("too few validation images are in the gallery: calibrate on the index's own images")
        copies = searcher.embedder.embed_images([perturb(queries.source(r), seed + r) for r in rows])
        originals = index.vectors_of([own[r] for r in rows])
        top_scores = np.sum(copies * originals, axis=1).tolist()  # the genuine match is the original
    info: dict[str, Any] = {"n_queries": len(top_scores), "seed": seed, "val": val}
    if labelled:
        score, precision, reached = precision_threshold(np.asarray(top_scores), np.asarray(correct), target)
        info.update(method="top-1 same-class precision", target=target, precision=precision, reached=reached)
    else:
        score = float(np.percentile(top_scores, percentile))
        info.update(method="near-copy score percentile", percentile=percentile, precision=None, reached=True)
    coverage = float(np.mean(np.asarray(top_scores) >= score))
    info.update(coverage=coverage, supported=bool(info["reached"] and coverage >= MIN_COVERAGE))
    info.update(score=score, calibrated_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    return Threshold(**info)
