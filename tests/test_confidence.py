"""How sure is a match: the "no good match" cut, the match probability and the copy cut, each checked against
a brute-force reference or a known truth (fast tier: synthetic data and the tiny backbone)."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from simlib.errors import SimlibError
from simlib.search.confidence import (
    HIGH_CONFIDENCE,
    LOW_CONFIDENCE,
    MIN_LIKELIHOOD_RATIO,
    NoMatchCut,
    Verdicts,
    _wilson_lower,
    confidence_label,
    no_match_cut,
)
from simlib.search.copies import (
    COPY_COSINE_PERCENTILES,
    SAME_PICTURE,
    THUMB_MARGIN,
    THUMB_SIZE,
    CopyCut,
    copy_cut,
    copy_groups,
    distinct_pairs_above,
    near_copy,
    nearest_distinct,
    thumbnail,
)
from simlib.search.probability import MatchCurve, fit_match_curve, isotonic, match_probability


# ----------------------------------------------------------------------------- no good match
def brute_force_cut(scores, right, target):
    """Every right-result score tried as the cut; the highest that flags fewer than k = floor(target * (m + 1))
    of the m right results (the split-conformal rank)."""
    good = scores[right]
    allowed = math.floor(target * (len(good) + 1)) - 1
    return max(v for v in good if np.sum(good < v) <= allowed)


def test_no_match_cut_matches_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(25, 120))
        scores = np.round(rng.uniform(0, 1, n), 2)  # rounded: ties happen
        right = rng.random(n) < scores
        if right.sum() < 10:
            continue
        target = float(rng.choice([0.05, 0.1, 0.2]))
        cut = no_match_cut(scores, right, max_false_flag=target, seed=trial)
        assert cut.score == brute_force_cut(scores, right, target), trial
        flagged = scores < cut.score
        assert cut.false_flag_rate == pytest.approx(flagged[right].mean())
        assert cut.false_flag_rate <= target + 1e-12
        assert cut.true_flag_rate == pytest.approx(flagged[~right].mean() if (~right).any() else 0.0)
        assert cut.precision_pass == pytest.approx(right[~flagged].mean())
        wrong_flagged = int(np.sum(flagged & ~right))
        lower = _wilson_lower(wrong_flagged, int((~right).sum()))
        assert cut.supported == ((~right).sum() >= 10 and lower >= MIN_LIKELIHOOD_RATIO * target)
        assert cut.n_queries == n and cut.n_right + cut.n_wrong == n and cut.seed == trial


def test_wilson_lower_bound_against_its_formula():
    assert _wilson_lower(0, 0) == 0.0 and _wilson_lower(0, 10) == 0.0
    # k/n = 0.5, n = 100, z = 1.645: the textbook value 0.4184
    assert _wilson_lower(50, 100) == pytest.approx(0.4184, abs=1e-3)
    assert _wilson_lower(10, 10) < 1.0


def test_no_match_cut_flags_at_most_the_target_on_fresh_queries():
    """The conformal bound: on fresh right results drawn like the validation ones, the cut flags at most the
    target share on average (here 10 %; 400 draws of 60 validation queries)."""
    rng = np.random.default_rng(1)
    fresh_rates = []
    for _ in range(400):
        right_scores = rng.normal(0.8, 0.05, 60)
        cut = no_match_cut(np.r_[right_scores, rng.normal(0.6, 0.05, 20)], np.r_[np.ones(60, bool), np.zeros(20, bool)])
        fresh_rates.append(np.mean(rng.normal(0.8, 0.05, 2000) < cut.score))
    assert np.mean(fresh_rates) <= 0.10 + 0.005
    assert np.mean(fresh_rates) >= 0.08  # and not needlessly timid


def test_no_match_cut_is_supported_only_when_it_separates():
    rng = np.random.default_rng(2)
    separated = no_match_cut(
        np.r_[rng.normal(0.8, 0.05, 300), rng.normal(0.6, 0.05, 100)], np.r_[[True] * 300, [False] * 100]
    )
    assert separated.supported and separated.true_flag_rate > 0.9 and separated.likelihood_ratio > 5
    assert separated.flags(0.5) and not separated.flags(0.95) and separated.flags(None)
    # wrong results score like right ones (an untrained model): flagging says nothing, so never say it
    same = no_match_cut(rng.normal(0.998, 0.0005, 400), rng.random(400) < 0.6)
    assert not same.supported and not same.flags(0.0)
    with pytest.raises(SimlibError, match="right top-1"):
        no_match_cut(np.ones(20), np.r_[[True] * 5, [False] * 15])
    with pytest.raises(SimlibError, match="target"):
        no_match_cut(np.ones(20), np.ones(20, bool), max_false_flag=0)


# ----------------------------------------------------------------------------- match probability
def isotonic_min_max(y, w):
    """The isotonic regression by its min-max formula: f_i = max_{j<=i} min_{k>=i} mean(y[j..k]) (weighted)."""
    n = len(y)
    out = np.empty(n)
    for i in range(n):
        out[i] = max(
            min(np.sum(y[j : k + 1] * w[j : k + 1]) / np.sum(w[j : k + 1]) for k in range(i, n)) for j in range(i + 1)
        )
    return out


def test_isotonic_matches_the_min_max_formula():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(1, 25))
        y, w = rng.random(n), rng.uniform(0.5, 3, n)
        np.testing.assert_allclose(isotonic(np.arange(n), y, w), isotonic_min_max(y, w), atol=1e-12)


def _ranked(scores: np.ndarray) -> np.ndarray:
    return -np.sort(-scores, axis=1)


def test_match_curve_recovers_a_known_probability():
    """Same kind with probability exactly the score: the fitted curve tracks it and is monotone."""
    rng = np.random.default_rng(4)
    scores = _ranked(rng.uniform(0.1, 0.9, (3000, 5)))
    same = rng.random(scores.shape) < scores
    curve = fit_match_curve(scores, same, seed=0)
    assert curve.kind == "score" and curve.brier_score < curve.brier_rank < curve.brier_base + 1e-9
    xs = np.array([x for x, _ in curve.knots])
    ps = np.array([p for _, p in curve.knots])
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ps) >= 0) and 2 <= len(curve.knots) <= 12
    grid = np.linspace(0.2, 0.8, 13)
    np.testing.assert_allclose(match_probability(grid, curve), grid, atol=0.07)
    # flat beyond the ends
    assert match_probability([-5.0], curve)[0] == ps[0] and match_probability([5.0], curve)[0] == ps[-1]


def test_match_curve_falls_back_to_rank_when_the_score_says_nothing():
    """An untrained model: every score crowded near 1 and unrelated to being right, but rank 1 is right more
    often than rank 5. The rank curve wins and gives each rank its validation share."""
    rng = np.random.default_rng(5)
    scores = _ranked(rng.uniform(0.997, 0.999, (2000, 5)))
    truth = np.array([0.7, 0.6, 0.5, 0.4, 0.3])
    same = rng.random(scores.shape) < truth
    curve = fit_match_curve(scores, same, seed=0)
    assert curve.kind == "rank" and curve.brier_rank < curve.brier_score
    p = match_probability(scores[0], curve)  # default ranks 1..5
    np.testing.assert_allclose(p, truth, atol=0.04)
    assert match_probability([0.5, 0.5], curve, ranks=[1, 50]).tolist() == [p[0], curve.knots[-1][1]]
    forced = fit_match_curve(scores, same, seed=0, kind="score")
    assert forced.kind == "score"
    with pytest.raises(SimlibError):
        fit_match_curve(scores[:5], same[:5])


def test_confidence_words():
    assert confidence_label(HIGH_CONFIDENCE) == "high confidence"
    assert confidence_label(HIGH_CONFIDENCE - 1e-9) == "medium confidence"
    assert confidence_label(LOW_CONFIDENCE) == "medium confidence"
    assert confidence_label(LOW_CONFIDENCE - 1e-9) == "low confidence"
    assert confidence_label(0.99, no_match=True) == "low confidence: no good match"


# ----------------------------------------------------------------------------- copies
def test_nearest_distinct_matches_brute_force():
    rng = np.random.default_rng(6)
    v = rng.normal(size=(50, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = rng.integers(0, 4, 50).astype(str).tolist()
    paths = [f"f{i % 45}" for i in range(50)]  # five files twice
    sims = v @ v.T
    for kw, other in (
        (dict(labels=labels), lambda i, j: labels[i] != labels[j]),
        (dict(paths=paths), lambda i, j: paths[i] != paths[j]),
    ):
        got = nearest_distinct(v, chunk=7, **kw)
        want = [max(sims[i, j] for j in range(50) if j != i and other(i, j)) for i in range(50)]
        np.testing.assert_allclose(got, want, rtol=1e-6)
        i, j = distinct_pairs_above(v, 0.3, chunk=7, **kw)
        want_pairs = {(a, b) for a in range(50) for b in range(a + 1, 50) if sims[a, b] >= 0.3 and other(a, b)}
        assert set(zip(i.tolist(), j.tolist(), strict=True)) == want_pairs


def test_copy_cut_cosine_alone_when_it_separates():
    rng = np.random.default_rng(7)
    distinct = rng.uniform(0.5, 0.9, 1000)
    copies = rng.uniform(0.95, 1.0, 200)
    cut = copy_cut(copies, distinct, percentile=99.9, seed=3)
    assert cut.separable and cut.thumb_min is None and not cut.needs_thumbnails
    assert cut.score > np.percentile(distinct, 99.9, method="higher") and cut.copy_recall == 1.0
    assert cut.distinct_leak == pytest.approx(np.mean(distinct >= cut.score)) and cut.distinct_leak <= 0.001
    assert cut.same(0.97) and not cut.same(0.8)


def test_copy_cut_adds_a_thumbnail_check_that_keeps_every_distinct_pair_out():
    rng = np.random.default_rng(8)
    distinct = rng.uniform(0.997, 0.9999, 500)  # crowded: the cosine cannot tell
    copies = rng.uniform(0.998, 1.0, 200)
    copy_thumbs = rng.uniform(0.97, 1.0, 200)
    pair_scores = rng.uniform(0.997, 0.9999, 3000)
    pair_thumbs = rng.uniform(0.5, 0.985, 3000)
    pair_thumbs[:2] = SAME_PICTURE + 1e-5  # the same picture under two labels: set aside
    cut = copy_cut(
        copies, distinct, copy_thumbs=copy_thumbs, pair_scores=pair_scores, pair_thumbs=pair_thumbs,
        pair_rows=np.arange(3000) % 500,
    )  # fmt: skip
    assert not cut.separable and cut.needs_thumbnails and cut.same_picture == 2
    over = pair_scores >= cut.score
    rivals = pair_thumbs[over & (pair_thumbs < SAME_PICTURE)]
    assert cut.thumb_min == pytest.approx(rivals.max() + THUMB_MARGIN)
    # brute force: every cosine cut tried, each with the lowest thumbnail cut that lets no rival through
    best = 0.0
    for q in COPY_COSINE_PERCENTILES:
        c = np.percentile(copies, q, method="lower")
        m = pair_thumbs[(pair_scores >= c) & (pair_thumbs < SAME_PICTURE)].max()
        best = max(best, np.mean((copies >= c) & (copy_thumbs >= m + THUMB_MARGIN)))
    assert cut.copy_recall == pytest.approx(best)
    assert cut.score in [np.percentile(copies, q, method="lower") for q in COPY_COSINE_PERCENTILES]
    passing = [i for i in range(3000) if cut.same(pair_scores[i], pair_thumbs[i])]
    assert passing == [0, 1] or passing == [i for i in (0, 1) if over[i]]  # only the same picture
    assert cut.copy_recall == pytest.approx(np.mean([cut.same(s, t) for s, t in zip(copies, copy_thumbs, strict=True)]))
    assert not cut.same(1.0)  # no thumbnail figure: never merge on the cosine alone
    with pytest.raises(SimlibError, match="thumbnail"):
        copy_cut(copies, distinct)


def _picture(seed: int, colour=None, size=(60, 80)) -> Image.Image:
    """A product-like picture: a coloured blob (random colour unless given) with texture on white."""
    rng = np.random.default_rng(seed)
    img = np.full((size[1], size[0], 3), 255, np.uint8)
    x0, y0 = rng.integers(5, 20, 2)
    x1, y1 = rng.integers(40, 56), rng.integers(50, 76)
    colour = rng.integers(0, 200, 3) if colour is None else np.asarray(colour)
    img[y0:y1, x0:x1] = colour + rng.integers(0, 55, (y1 - y0, x1 - x0, 1))
    return Image.fromarray(img)


def test_thumbnail_and_near_copy():
    a, b = _picture(1), _picture(2)
    ta = thumbnail(a)
    assert ta.shape == (THUMB_SIZE * THUMB_SIZE * 3,) and float(ta @ ta) == pytest.approx(1.0, abs=1e-5)
    c1, c2, c3 = near_copy(a, 5), near_copy(a, 5), near_copy(a, 6)
    assert np.array_equal(np.asarray(c1), np.asarray(c2))  # seeded
    assert c1.size != c3.size or not np.array_equal(np.asarray(c1), np.asarray(c3))
    assert float(thumbnail(c1) @ ta) > 0.95 > float(thumbnail(b) @ ta)


def test_copy_groups_against_the_rule():
    rng = np.random.default_rng(9)
    base = rng.normal(size=(6, 16))
    v = np.repeat(base, 3, axis=0) + rng.normal(0, 0.01, (18, 16))  # six items, three copies each
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cut = CopyCut(0.99, None, 99.9, 0.9, 1.0, 1.0, 0.0, True, 0, 18, 6)
    order = rng.permutation(18).tolist()
    groups = copy_groups(order, v, cut)
    assert sorted(len(g) for g in groups) == [3] * 6
    for g in groups:
        assert len({order[p] // 3 for p in g}) == 1  # each group one item
        assert g == sorted(g)  # the best-ranked first
    heads = [order[g[0]] for g in groups]
    assert all(float(v[a] @ v[b]) < 0.99 for a in heads for b in heads if a != b)
    thumbs = np.eye(18, dtype=np.float32)  # thumbnails that never match: nothing merges
    strict = CopyCut(0.99, 0.5, 99.9, 0.9, 0.0, 1.0, 0.0, False, 0, 18, 6)
    assert len(copy_groups(order, v, strict, thumbs)) == 18


# ----------------------------------------------------------------------------- storage
def test_verdicts_round_trip_through_json():
    rng = np.random.default_rng(10)
    scores = _ranked(rng.uniform(0, 1, (200, 5)))
    same = rng.random(scores.shape) < scores
    verdicts = Verdicts(
        no_match=no_match_cut(scores[:, 0], same[:, 0], seed=4, val=0.2),
        curve=fit_match_curve(scores, same, seed=4),
        copies=copy_cut(rng.uniform(0.95, 1, 50), rng.uniform(0, 0.9, 100)),
    )
    back = Verdicts.from_dict(json.loads(json.dumps(verdicts.to_dict())))
    assert back.no_match == NoMatchCut.from_dict(verdicts.no_match.to_dict())
    assert back.no_match.score == pytest.approx(verdicts.no_match.score, abs=1e-6)
    assert back.no_match.supported == verdicts.no_match.supported and back.no_match.seed == 4
    assert isinstance(back.curve, MatchCurve) and back.curve.kind == verdicts.curve.kind
    np.testing.assert_allclose(
        match_probability(scores[:3], back.curve), match_probability(scores[:3], verdicts.curve), atol=1e-4
    )
    assert back.copies.score == pytest.approx(verdicts.copies.score) and back.copies.thumb_min is None
    assert Verdicts.from_dict({}) == Verdicts() and Verdicts().to_dict() == {}
    assert Verdicts().words([0.9, 0.8]) == [(None, ""), (None, "")] and not Verdicts().no_good_match(0.0)
    assert NoMatchCut.from_dict({**verdicts.no_match.to_dict(), "added_later": 1}).seed == 4  # unknown keys ignored


# ----------------------------------------------------------------------------- on a searcher
def test_calibrate_verdicts_on_a_tiny_gallery(tmp_path):
    from simlib.config import ModelConfig
    from simlib.data import ImageTable
    from simlib.model import Embedder
    from simlib.search import Searcher
    from simlib.search.confidence import calibrate_verdicts
    from simlib.search.copies import calibrate_copies

    paths, labels = [], []
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)]
    for c, colour in enumerate(colours):
        for i in range(20):
            path = tmp_path / f"c{c}_{i}.png"
            _picture(100 * c + i, colour).save(path)
            paths.append(str(path))
            labels.append(f"class{c}")
    table = ImageTable(ids=np.arange(len(paths)), paths=tuple(paths), labels=np.asarray(labels, object), name="t")
    embedder = Embedder.build(ModelConfig(backbone="tiny", image_size=32, embedding_dim=16, weights="none"))
    searcher, _ = Searcher.from_table(embedder, table, progress=False)
    v1 = calibrate_verdicts(searcher, table, n_copies=20, seed=0)
    assert calibrate_copies(searcher, n_copies=20, seed=0) == v1.copies  # seeded
    assert calibrate_copies(searcher, n_copies=5, max_images=30, seed=0).n_images == 30
    assert v1.no_match.n_queries == 16 and v1.curve.n_queries == 16 and v1.copies.n_copies == 20
    assert v1.copies.distinct_by == "label"
    # the acceptance property, by brute force over every pair of the gallery: no two images of different
    # labels are called copies (thumbnails as the verdict asks for them)
    vectors = searcher.index.vectors_of(list(range(len(paths))))
    thumbs = np.stack([thumbnail(p) for p in paths])
    for a in range(len(paths)):
        for b in range(a + 1, len(paths)):
            if labels[a] != labels[b]:
                t = float(thumbs[a] @ thumbs[b]) if v1.copies.needs_thumbnails else None
                assert not v1.copies.same(float(vectors[a] @ vectors[b]), t), (a, b)
    json.dumps(v1.to_dict())


def test_verdict_words_for_one_query():
    rng = np.random.default_rng(11)
    scores = _ranked(rng.uniform(0, 1, (400, 5)))
    same = rng.random(scores.shape) < scores
    right_scores = np.r_[rng.normal(0.8, 0.05, 300), rng.normal(0.4, 0.05, 100)]
    cut = no_match_cut(right_scores, np.r_[[True] * 300, [False] * 100])
    verdicts = Verdicts(no_match=cut, curve=fit_match_curve(scores, same, seed=0))
    assert cut.supported
    good = verdicts.words([0.95, 0.9, 0.2])
    p = match_probability([0.95, 0.9, 0.2], verdicts.curve)
    assert [w for _, w in good] == [confidence_label(x) for x in p] and [q for q, _ in good] == pytest.approx(p)
    assert good[0][1] == "high confidence" and good[2][1] == "low confidence"
    # a query whose best result is under the cut: every result says so, whatever its probability
    bad = verdicts.words([cut.score - 0.01, 0.1])
    assert verdicts.no_good_match(cut.score - 0.01) and not verdicts.no_good_match(cut.score)
    assert [w for _, w in bad] == ["low confidence: no good match"] * 2
    assert verdicts.words([]) == []
