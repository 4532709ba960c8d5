"""The calibrated match probability: how likely a result is the same kind of product as the query.

:class:`MatchCurve` (:func:`fit_match_curve`, :func:`match_probability`) is a monotone function of the
result's cosine (isotonic regression over equal-count score bins) or, when the cosine tells less than the rank
(an untrained model crowds every score into 0.997-0.999), of its rank. It is fitted on the index's own
labelled validation queries and stored in the manifest's verdicts (:class:`simlib.search.confidence.Verdicts`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simlib.errors import SimlibError
from simlib.search.copies import from_mapping, rounded

CURVE_BINS = 20
CURVE_KNOTS = 12  # at most this many (score, probability) knots stored


def isotonic(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Non-decreasing least-squares fit of ``y`` on ``x`` (pool adjacent violators), one value per point,
    in the order of ``x`` sorted ascending (stable)."""
    order = np.argsort(np.asarray(x), kind="stable")
    y = np.asarray(y, np.float64)[order]
    w = np.ones_like(y) if w is None else np.asarray(w, np.float64)[order]
    values: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(y, w, strict=True):
        values.append(float(yi))
        weights.append(float(wi))
        sizes.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            wt = weights[-2] + weights[-1]
            v = (values[-2] * weights[-2] + values[-1] * weights[-1]) / wt
            n = sizes[-2] + sizes[-1]
            del values[-1], weights[-1], sizes[-1]
            values[-1], weights[-1], sizes[-1] = v, wt, n
    return np.repeat(values, sizes)


@dataclasses.dataclass(frozen=True)
class MatchCurve:
    """The estimated probability that a result is the same kind of product as the query.

    Attributes:
        kind: "score": ``knots`` are (cosine, probability), interpolated linearly and flat beyond the ends;
            "rank": ``knots`` are (rank, probability), for a model whose cosine tells less than the rank.
        knots: ((x, probability), ...), x increasing, probability non-decreasing in the cosine (for "rank":
            whatever validation measured per rank).
        brier_score, brier_rank, brier_base: cross-validated (2-fold, by query) Brier scores of the cosine
            curve, the rank curve and the constant base rate; the lower of the first two chose ``kind``.
        base_rate: share of same-kind results among the validation results.
        n_queries, k: validation queries and results per query it was fitted on.
        seed: the validation split's and the cross-validation's seed.
    """

    kind: str
    knots: tuple[tuple[float, float], ...]
    brier_score: float
    brier_rank: float
    brier_base: float
    base_rate: float
    n_queries: int
    k: int
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: knots as ``[[x, p], ...]``."""
        out = dataclasses.asdict(self)
        out["knots"] = [[rounded(x, 7), rounded(p, 4)] for x, p in self.knots]
        return {k: rounded(v) if isinstance(v, float) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MatchCurve:
        """Read :meth:`to_dict`'s output."""
        knots = tuple((float(x), float(p)) for x, p in data["knots"])
        return from_mapping(cls, {**data, "knots": knots})


def _score_knots(scores: np.ndarray, same: np.ndarray, bins: int = CURVE_BINS) -> tuple[tuple[float, float], ...]:
    """Isotonic regression of ``same`` on ``scores`` over ``bins`` equal-count bins (each bin's rate smoothed
    as (k + 1) / (n + 2)), merged into at most :data:`CURVE_KNOTS` knots at the bins' mean scores."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order].astype(np.float64)
    edges = np.unique(np.linspace(0, len(s), min(bins, len(s)) + 1).round().astype(int))
    xs, rates, ns = [], [], []
    for a, b in itertools.pairwise(edges):
        if b > a:
            xs.append(float(np.mean(s[a:b])))
            rates.append((float(np.sum(y[a:b])) + 1) / (b - a + 2))
            ns.append(b - a)
    fitted = isotonic(np.arange(len(xs)), np.asarray(rates), np.asarray(ns, np.float64))
    # one knot per run of equal fitted values (at its weighted mean score), at most CURVE_KNOTS
    knots: list[list[float]] = []  # [x_sum, weight, p]
    for x, p, n in zip(xs, fitted, ns, strict=True):
        if knots and abs(knots[-1][2] - p) < 1e-12:
            knots[-1][0] += x * n
            knots[-1][1] += n
        else:
            knots.append([x * n, n, float(p)])
    while len(knots) > CURVE_KNOTS:  # merge the closest neighbours in probability
        gaps = [knots[i + 1][2] - knots[i][2] for i in range(len(knots) - 1)]
        i = int(np.argmin(gaps))
        a, b = knots[i], knots[i + 1]
        knots[i : i + 2] = [[a[0] + b[0], a[1] + b[1], (a[2] * a[1] + b[2] * b[1]) / (a[1] + b[1])]]
    out = tuple((x_sum / n, p) for x_sum, n, p in knots)
    # distinct x (equal mean scores can happen with ties): keep the first
    keep = [0] + [i for i in range(1, len(out)) if out[i][0] > out[i - 1][0]]
    return tuple(out[i] for i in keep)


def _rank_knots(same: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Per rank (1..k): the smoothed share of same-kind results, (k + 1) / (n + 2)."""
    n = same.shape[0]
    return tuple((float(r + 1), (float(same[:, r].sum()) + 1) / (n + 2)) for r in range(same.shape[1]))


def _interp(x: np.ndarray, knots: Sequence[tuple[float, float]]) -> np.ndarray:
    xs = np.asarray([k[0] for k in knots], np.float64)
    ps = np.asarray([k[1] for k in knots], np.float64)
    return np.interp(np.asarray(x, np.float64), xs, ps)


def fit_match_curve(
    scores: np.ndarray,
    same: np.ndarray,
    *,
    seed: int = 0,
    kind: str | None = None,
) -> MatchCurve:
    """Fit the match probability on validation results.

    Args:
        scores: (n_queries, k) cosine of each validation query's top-k results, best first.
        same: (n_queries, k) whether each result is of the query's class.
        seed: seeds the 2-fold split by query that scores the two candidate curves.
        kind: force "score" or "rank"; None: the one with the lower cross-validated Brier score.

    Raises:
        SimlibError: fewer than 10 queries, or shapes that do not match.
    """
    scores = np.asarray(scores, np.float64)
    same = np.asarray(same, bool)
    if scores.ndim != 2 or scores.shape != same.shape:
        raise SimlibError("scores and same must both be (n_queries, k)")
    n, k = scores.shape
    if n < 10:
        raise SimlibError(f"only {n} validation queries: the match probability needs at least 10")
    rng = np.random.default_rng(seed)
    fold = rng.permutation(n) % 2
    brier = {"score": 0.0, "rank": 0.0, "base": 0.0}
    for f in (0, 1):
        tr, te = fold != f, fold == f
        y = same[te].astype(np.float64)
        p_score = _interp(scores[te], _score_knots(scores[tr].ravel(), same[tr].ravel()))
        p_rank = np.broadcast_to(np.asarray([p for _, p in _rank_knots(same[tr])]), y.shape)
        brier["score"] += float(np.sum((p_score - y) ** 2))
        brier["rank"] += float(np.sum((p_rank - y) ** 2))
        brier["base"] += float(np.sum((same[tr].mean() - y) ** 2))
    brier = {name: total / same.size for name, total in brier.items()}
    chosen = kind or ("score" if brier["score"] <= brier["rank"] else "rank")
    if chosen not in ("score", "rank"):
        raise SimlibError(f"curve kind must be 'score' or 'rank', not {kind!r}")
    knots = _score_knots(scores.ravel(), same.ravel()) if chosen == "score" else _rank_knots(same)
    return MatchCurve(
        kind=chosen,
        knots=knots,
        brier_score=brier["score"],
        brier_rank=brier["rank"],
        brier_base=brier["base"],
        base_rate=float(same.mean()),
        n_queries=n,
        k=k,
        seed=int(seed),
    )


def match_probability(
    scores: Sequence[float] | np.ndarray, curve: MatchCurve, ranks: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """The estimated probability that each result is the same kind of product as the query.

    Args:
        scores: the results' cosines.
        curve: from :func:`fit_match_curve` (or :meth:`MatchCurve.from_dict`).
        ranks: the results' ranks (1 = best) for a "rank" curve; default: ``scores`` is one ranked list,
            best first (ranks 1, 2, ...). Ranks past the curve's last take its last value.
    """
    scores = np.asarray(scores, np.float64)
    if curve.kind == "score":
        return _interp(scores, curve.knots)
    if ranks is None:
        ranks = np.arange(1, scores.size + 1).reshape(scores.shape)
    return _interp(np.asarray(ranks, np.float64), curve.knots)
