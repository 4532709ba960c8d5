"""Paired comparisons (simlib.evaluation.stats) against brute-force and closed-form references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from simlib.errors import SimlibError
from simlib.evaluation.stats import (
    BEATS,
    NO_DIFFERENCE,
    WORSE,
    mcnemar_exact,
    paired_bootstrap,
    paired_difference,
    sign_flip_test,
    verdict,
    verdict_phrase,
)


def binomial_two_sided(k: int, n: int) -> float:
    """The exact McNemar p-value from the binomial distribution, summed term by term."""
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("a_only,b_only", [(0, 0), (3, 0), (5, 5), (12, 3), (2, 9), (40, 25)])
def test_mcnemar_is_the_binomial_test_on_the_disagreements(a_only, b_only):
    both, neither = 7, 4
    a = np.array([1] * a_only + [0] * b_only + [1] * both + [0] * neither)
    b = np.array([0] * a_only + [1] * b_only + [1] * both + [0] * neither)
    out = mcnemar_exact(a, b)
    assert (out["a_only"], out["b_only"]) == (a_only, b_only)
    expected = 1.0 if a_only + b_only == 0 else binomial_two_sided(a_only, a_only + b_only)
    assert out["p_value"] == pytest.approx(expected, rel=1e-9)


def test_mcnemar_stays_finite_for_thousands_of_disagreements():
    a = np.r_[np.ones(1500), np.zeros(1300)]
    b = 1 - a
    p = mcnemar_exact(a, b)["p_value"]
    assert 0 < p < 0.01


def test_mcnemar_refuses_non_binary_scores():
    with pytest.raises(SimlibError, match="0/1"):
        mcnemar_exact([0.5, 1], [1, 0])


def test_sign_flip_matches_the_exhaustive_enumeration_on_a_small_sample():
    rng = np.random.default_rng(3)
    a, b = rng.random(10), rng.random(10)
    d = a - b
    flips = np.array(list(itertools.product([-1, 1], repeat=len(d))))
    exact = float(np.mean(np.abs((flips * d).mean(axis=1)) >= abs(d.mean()) - 1e-12))
    assert sign_flip_test(a, b, n_permutations=20_000, seed=0) == pytest.approx(exact, abs=0.01)
    assert sign_flip_test(a, a) == 1.0


def test_bootstrap_is_reproducible_by_seed_and_centred_on_the_observed_difference():
    rng = np.random.default_rng(0)
    a, b = rng.random(300), rng.random(300)
    first = paired_bootstrap(a, b, seed=7)
    assert first == paired_bootstrap(a, b, seed=7)
    assert first != paired_bootstrap(a, b, seed=8)
    diff, low, high = first
    assert diff == pytest.approx(float((a - b).mean()))
    assert low < diff < high
    # the percentile interval of the mean of differences: about ±1.96 standard errors
    se = float((a - b).std(ddof=1) / math.sqrt(len(a)))
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = 0
    trials = 200
    for t in range(trials):  # method a hits 62 %, method b 58 %, correlated per query
        base = rng.random(400)
        a = (base < 0.62).astype(float)
        b = (np.where(rng.random(400) < 0.7, base, rng.random(400)) < 0.58).astype(float)
        _, low, high = paired_bootstrap(a, b, n_resamples=400, seed=t)
        covered += low <= 0.04 <= high
    assert 0.88 <= covered / trials <= 0.99


def test_verdicts_come_from_the_interval():
    assert verdict(0.01, 0.05) == BEATS
    assert verdict(-0.05, -0.001) == WORSE
    assert verdict(-0.01, 0.03) == NO_DIFFERENCE
    assert verdict(0.0, 0.0) == NO_DIFFERENCE
    with pytest.raises(SimlibError):
        verdict(0.2, 0.1)
    assert verdict_phrase("trained", "pixels", BEATS) == "trained beats pixels"
    assert "no detectable difference from pixels" in verdict_phrase("trained", "pixels", NO_DIFFERENCE)


def test_paired_difference_picks_the_test_by_metric():
    rng = np.random.default_rng(2)
    a = (rng.random(500) < 0.8).astype(float)
    b = (rng.random(500) < 0.5).astype(float)
    d = paired_difference(a, b, metric="recall@1", a="trained", b="pixels")
    assert d.test == "McNemar exact" and d.verdict == BEATS and d.p_value < 1e-6
    assert d.a_score - d.b_score == pytest.approx(d.difference)
    assert d.interval_text().startswith("+") and "points" in d.interval_text()
    ap = paired_difference(rng.random(50), rng.random(50), metric="map@r", a="x", b="y")
    assert ap.test == "paired sign-flip" and ap.n_queries == 50
