"""Is a difference between two methods a result? Paired comparisons on the same queries.

Two methods scored on the same queries give two per-query score vectors (Recall@1 hits: 0/1;
average precision at R: in [0, 1]). Their difference is judged on the pairs, not on the two means:

- :func:`paired_bootstrap`: the mean difference with a percentile bootstrap interval (queries
  resampled with replacement, the same resample for both methods; seeded, so reproducible);
- :func:`mcnemar_exact`: the exact two-sided McNemar test for paired 0/1 outcomes (only the
  queries where the methods disagree count: under "no difference" each disagreement is a fair coin);
- :func:`sign_flip_test`: a paired randomisation test for continuous scores (AP@R): under "no
  difference" each query's difference is as likely negative as positive;
- :func:`verdict`: the word a sentence may use, chosen from the interval: "beats" when the whole
  interval is above 0, "worse" when it is below, "no detectable difference" when it holds 0.

Queries of one class are not independent draws (they share a class and a gallery), so intervals from
resampling single queries are, if anything, a little narrow: a verdict of "no detectable difference"
is safe, a "beats" by a hair deserves a look at the interval.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from simlib.errors import SimlibError

CONFIDENCE = 0.95
N_BOOTSTRAP = 2000
N_PERMUTATIONS = 10_000
BEATS, WORSE, NO_DIFFERENCE = "beats", "worse", "no detectable difference"
# the per-query scores compare() keeps, by the name of the summary metric they average to
PER_QUERY = {"recall@1": "hit@1", "map@r": "ap@r"}


def _pair(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise SimlibError(f"paired scores need two vectors over the same queries (got shapes {a.shape}, {b.shape})")
    if len(a) == 0:
        raise SimlibError("paired scores need at least one query")
    return a, b


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = N_BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its percentile bootstrap interval.

    Args:
        a, b: per-query scores of two methods on the same queries (``a[i]`` and ``b[i]``: query ``i``).
        n_resamples: bootstrap resamples.
        confidence: the interval's coverage (0.95: a 95 % interval).
        seed: the resampling seed (the same seed gives the same interval).

    Returns:
        ``(difference, low, high)``.
    """
    a, b = _pair(a, b)
    d = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, 256):  # in chunks: never more than 256 x n indices at once
        m = min(256, n_resamples - start)
        means[start : start + m] = d[rng.integers(0, len(d), (m, len(d)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(d.mean()), float(low), float(high)


def mcnemar_exact(a_hits: Sequence[float] | np.ndarray, b_hits: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Exact two-sided McNemar test for paired 0/1 outcomes (e.g. Recall@1 hits).

    Returns:
        ``{"a_only": n10, "b_only": n01, "p_value": p}``: the queries only ``a`` got right, only ``b``
        got right, and the probability of a split at least that uneven if each disagreement were a
        fair coin (binomial, two-sided, capped at 1).
    """
    a, b = _pair(a_hits, b_hits)
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise SimlibError("McNemar's test needs 0/1 outcomes")
    a_only = int(((a == 1) & (b == 0)).sum())
    b_only = int(((a == 0) & (b == 1)).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p_value": 1.0}
    # P(X <= k) for X ~ Binomial(n, 1/2), in log space (n can be in the thousands)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return {"a_only": a_only, "b_only": b_only, "p_value": float(min(1.0, 2 * tail))}


def sign_flip_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_permutations: int = N_PERMUTATIONS,
    seed: int = 0,
) -> float:
    """Two-sided paired randomisation test of ``mean(a - b) == 0``: each query's difference has its
    sign flipped at random; the p-value is the share of flips whose mean is at least as far from 0
    as the observed one (counting the observed assignment, so never 0)."""
    a, b = _pair(a, b)
    d = a - b
    observed = abs(d.mean())
    if observed == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, n_permutations, 256):
        m = min(256, n_permutations - start)
        signs = rng.integers(0, 2, (m, len(d))) * 2 - 1
        extreme += int((np.abs((signs * d).mean(axis=1)) >= observed - 1e-12).sum())
    return float((extreme + 1) / (n_permutations + 1))


def verdict(low: float, high: float) -> str:
    """The word for "a against b" from the interval of ``a - b``: "beats" (all above 0), "worse"
    (all below 0) or "no detectable difference" (the interval holds 0)."""
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise SimlibError(f"not an interval: [{low}, {high}]")
    if low > 0:
        return BEATS
    if high < 0:
        return WORSE
    return NO_DIFFERENCE


def verdict_phrase(a: str, b: str, word: str) -> str:
    """A verdict as a sentence fragment: "trained beats pixels", "trained: no detectable difference from pixels"."""
    if word == NO_DIFFERENCE:
        return f"{a}: no detectable difference from {b}"
    if word == WORSE:
        return f"{a} is worse than {b}"
    return f"{a} {word} {b}"


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """One method against another on the same queries, for one metric.

    Attributes:
        split, part: which queries (as in :func:`simlib.evaluation.compare`'s rows).
        metric: "recall@1" or "map@r" (the mean of the per-query "hit@1" or "ap@r").
        a, b: the two methods; the difference is ``a - b``.
        a_score, b_score: their means over the queries.
        difference, low, high: ``a_score - b_score`` and its bootstrap interval.
        confidence: the interval's coverage.
        p_value: McNemar (exact) for Recall@1, the sign-flip test for mAP@R.
        test: which test gave ``p_value``.
        verdict: "beats", "worse" or "no detectable difference", from the interval.
        n_queries: how many queries were paired.
    """

    split: str
    part: str
    metric: str
    a: str
    b: str
    a_score: float
    b_score: float
    difference: float
    low: float
    high: float
    confidence: float
    p_value: float
    test: str
    verdict: str
    n_queries: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def phrase(self) -> str:
        return verdict_phrase(self.a, self.b, self.verdict)

    def interval_text(self, scale: float = 100.0, unit: str = " points") -> str:
        """``+0.7 points [-3.7, +4.8]`` (differences in points of a score out of 100 by default)."""
        return f"{self.difference * scale:+.1f}{unit} [{self.low * scale:+.1f}, {self.high * scale:+.1f}]"


def paired_difference(
    a_scores: np.ndarray,
    b_scores: np.ndarray,
    *,
    metric: str,
    a: str,
    b: str,
    split: str = "",
    part: str = "all",
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> PairedDifference:
    """Compare two methods' per-query scores (``metric``: "recall@1" for 0/1 hits, "map@r" for AP@R)."""
    diff, low, high = paired_bootstrap(a_scores, b_scores, confidence=confidence, seed=seed)
    if metric == "recall@1":
        p, test = mcnemar_exact(a_scores, b_scores)["p_value"], "McNemar exact"
    else:
        p, test = sign_flip_test(a_scores, b_scores, seed=seed), "paired sign-flip"
    return PairedDifference(
        split=split,
        part=part,
        metric=metric,
        a=a,
        b=b,
        a_score=float(np.mean(a_scores)),
        b_score=float(np.mean(b_scores)),
        difference=diff,
        low=low,
        high=high,
        confidence=confidence,
        p_value=p,
        test=test,
        verdict=verdict(low, high),
        n_queries=len(a_scores),
    )
