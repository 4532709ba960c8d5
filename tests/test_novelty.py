"""The "unlike the gallery" check (simlib.search.novelty): the conformal cut against a brute-force reference and
its coverage, the Mahalanobis distance, the manifest round trip, and the Searcher and the app applying it.
Fast tier: synthetic statistics and a tiny untrained model, no ResNet50, no data."""

import dataclasses
import json
import math

import numpy as np
import pytest
from PIL import Image

from simlib.errors import SimlibError
from simlib.search.confidence import Verdicts
from simlib.search.novelty import (
    FEATURES,
    MIN_CALIBRATION,
    NOVELTY_VERSION,
    NoveltyCut,
    conformal_cut,
    image_statistics,
    novelty_cut,
    probe_images,
)

D = len(FEATURES)


def _gaussian(n: int, seed: int) -> np.ndarray:
    """Correlated Gaussian statistics (a fixed mixing matrix), ``n`` rows."""
    mix = np.random.default_rng(99).normal(0, 1, (D, D)) / math.sqrt(D) + np.eye(D)
    return np.random.default_rng(seed).normal(0, 1, (n, D)) @ mix + 5.0


FAR = _gaussian(12, 7) + 50.0  # probes far from every draw


def test_conformal_cut_is_the_order_statistic():
    rng = np.random.default_rng(0)
    for n in (1, 9, 99, 100, 250):
        scores = rng.normal(size=n)
        for alpha in (0.01, 0.05, 0.1, 0.5):
            rank = math.ceil((1 - alpha) * (n + 1) - 1e-9)
            expected = math.inf if rank > n else sorted(scores)[rank - 1]
            assert conformal_cut(scores, alpha) == expected
    with pytest.raises(SimlibError):
        conformal_cut([1.0], 0.0)
    with pytest.raises(SimlibError):
        conformal_cut([], 0.1)


def test_conformal_cut_covers_fresh_draws():
    # for exchangeable continuous scores the chance that a new one is beyond the cut is exactly 1 - rank / (n + 1)
    rng = np.random.default_rng(1)
    n, alpha, trials = 199, 0.05, 4000
    flagged = 0
    for _ in range(trials):
        cal = rng.normal(size=n)
        flagged += rng.normal() > conformal_cut(cal, alpha)
    exact = 1 - math.ceil((1 - alpha) * (n + 1) - 1e-9) / (n + 1)
    assert exact <= alpha + 1e-12
    assert abs(flagged / trials - exact) < 4 * math.sqrt(exact * (1 - exact) / trials)


def test_distance_is_the_mahalanobis_distance():
    ref, cal = _gaussian(600, 1), _gaussian(200, 2)
    cut = novelty_cut(ref, cal, probes=FAR, seed=3)
    z = (cal - ref.mean(0)) / ref.std(0)
    cov = np.cov((ref - ref.mean(0)) / ref.std(0), rowvar=False) + 1e-3 * np.eye(D)
    brute = np.array([math.sqrt(float(v @ np.linalg.solve(cov, v))) for v in z])
    np.testing.assert_allclose(cut.distance(cal), brute, rtol=1e-8)
    rank = math.ceil((1 - cut.max_false_flag) * (len(cal) + 1) - 1e-9)
    assert cut.score == pytest.approx(np.sort(brute)[rank - 1])
    assert cut.false_flag_bound == pytest.approx(1 - rank / (len(cal) + 1)) and cut.false_flag_bound <= 0.01


def test_the_cut_flags_at_most_the_bound_of_gallery_like_draws_and_every_far_one():
    flagged, total = 0, 0
    for seed in range(20):
        cut = novelty_cut(_gaussian(500, 100 + seed), _gaussian(300, 200 + seed), max_false_flag=0.05, probes=FAR)
        fresh = cut.flags_statistics(_gaussian(500, 300 + seed))
        flagged, total = flagged + int(fresh.sum()), total + len(fresh)
        assert cut.supported and cut.probe_flag_rate == 1.0 and cut.flags_statistics(FAR).all()
    # the split-conformal bound holds on average over calibrations (the reference is fitted on other draws)
    assert flagged / total <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / total)


def test_unsupported_when_the_probes_pass_or_the_target_is_out_of_reach():
    ref, cal = _gaussian(500, 1), _gaussian(200, 2)
    near = novelty_cut(ref, cal, probes=_gaussian(12, 9))
    assert not near.supported and near.probe_flag_rate < 1
    assert not near.flags_statistics(FAR).any()  # unsupported: never said
    tiny_target = novelty_cut(ref, cal, max_false_flag=0.001, probes=FAR)  # rank past n: no finite cut
    assert tiny_target.score == math.inf and not tiny_target.supported
    with pytest.raises(SimlibError, match="held-out"):
        novelty_cut(ref, cal[: MIN_CALIBRATION - 1], probes=FAR)
    with pytest.raises(SimlibError):
        novelty_cut(ref[:, :3], cal, probes=FAR)


def test_round_trip_through_the_manifest_json():
    cut = novelty_cut(_gaussian(500, 1), _gaussian(200, 2), probes=FAR, seed=5)
    back = NoveltyCut.from_dict(json.loads(json.dumps(cut.to_dict())))
    assert back.version == NOVELTY_VERSION and back.features == FEATURES and back.seed == 5
    assert back.score == pytest.approx(cut.score, abs=1e-6) and back.supported
    x = _gaussian(50, 3)
    np.testing.assert_allclose(back.distance(x), cut.distance(x), rtol=1e-4)
    verdicts = Verdicts.from_dict(json.loads(json.dumps(Verdicts(novelty=cut).to_dict())))
    assert verdicts.checks_novelty and verdicts.novelty.score == pytest.approx(cut.score, abs=1e-6)
    # an index calibrated before the check: no novelty part, nothing flagged
    assert Verdicts.from_dict({"copies": None}).novelty is None and not Verdicts().checks_novelty
    infinite = dataclasses.replace(cut, score=math.inf, supported=False)
    assert infinite.to_dict()["score"] is None and NoveltyCut.from_dict(infinite.to_dict()).score == math.inf
    with pytest.raises(SimlibError, match="calibrate"):
        NoveltyCut.from_dict({**cut.to_dict(), "version": NOVELTY_VERSION + 1})


def test_image_statistics_tell_noise_and_fields_from_a_photo_like_picture():
    photo = _photo(0)
    s = image_statistics(photo)
    assert s.shape == (D,) and np.isfinite(s).all()
    probes = [image_statistics(p) for p in probe_images(0)]
    assert len(probes) == 12 and all(np.isfinite(p).all() for p in probes)
    assert not np.allclose(probes[0], s) and image_statistics(np.asarray(photo)) == pytest.approx(s)


# ----------------------------------------------------------------------------- applied by the Searcher and the app
def _photo(seed: int) -> Image.Image:
    """A catalogue-like picture: a shaded object on a white background."""
    rng = np.random.default_rng(seed)
    a = np.full((80, 60, 3), 255, np.uint8)
    h, w = int(rng.integers(30, 60)), int(rng.integers(20, 40))
    top, left = (80 - h) // 2, (60 - w) // 2
    base = rng.integers(40, 200, 3)
    shade = np.linspace(0.7, 1.2, h)[:, None, None] * base + rng.normal(0, 8, (h, w, 3))
    a[top : top + h, left : left + w] = np.clip(shade, 0, 255).astype(np.uint8)
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def photo_searcher(tmp_path_factory):
    from simlib.config import ModelConfig
    from simlib.data import ImageTable
    from simlib.model import Embedder
    from simlib.search import Searcher

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i in range(12):
        path = folder / f"p{i}.png"
        _photo(i).save(path)
        paths.append(str(path))
    table = ImageTable(ids=np.arange(len(paths)), paths=tuple(paths), labels=None, name="photos")
    embedder = Embedder.build(ModelConfig(backbone="tiny", image_size=32, embedding_dim=16, weights="none"))
    searcher, _ = Searcher.from_table(embedder, table, progress=False)
    stats = np.stack([image_statistics(_photo(100 + i)) for i in range(320)])
    cut = novelty_cut(stats[:200], stats[200:], seed=0)  # the built-in probes decide support
    assert cut.supported
    searcher.set_verdicts(Verdicts(novelty=cut))
    return searcher, paths, folder


def test_the_searcher_marks_every_hit_of_a_query_unlike_the_gallery(photo_searcher, tmp_path):
    from simlib.search import Searcher, no_good_match

    searcher, _, _ = photo_searcher
    noise = np.random.default_rng(3).integers(0, 256, (80, 60, 3), dtype=np.uint8)
    hits = searcher.query(noise, k=3)
    assert searcher.unlike_gallery(noise) is True and all(h.unlike_gallery and h.weak for h in hits)
    assert no_good_match(hits) and hits[0].to_dict()["unlike_gallery"] is True
    like = searcher.query(_photo(500), k=3)
    assert searcher.unlike_gallery(_photo(500)) is False and not any(h.unlike_gallery or h.weak for h in like)
    # with a match curve too: a probability for a query like the gallery, none for one unlike it (the curve was
    # fitted on queries like the gallery's), whose tiles then show the cosine
    from simlib.search.probability import MatchCurve

    curve = MatchCurve("score", ((-1.0, 0.2), (1.0, 0.9)), 0.1, 0.2, 0.25, 0.5, 40, 5)
    saved = searcher.verdicts  # the fixture is shared by the module's tests
    searcher.set_verdicts(dataclasses.replace(saved, curve=curve))
    assert all(h.probability is not None for h in searcher.query(_photo(500), k=3))
    unlike = searcher.query(noise, k=3)
    searcher.set_verdicts(saved)
    assert all(h.probability is None and h.unlike_gallery for h in unlike)
    assert f"{unlike[0].score:.3f}" in unlike[0].caption() and "same kind" not in unlike[0].caption()
    assert not no_good_match(like)
    # the same from a vector with its image (the app's path), and without the image: not checked
    vector = searcher.embedder.embed_images([noise])[0]
    assert all(h.unlike_gallery for h in searcher.query_vector(vector, 2, image=noise, collapse_duplicates=0.99))
    assert not any(h.unlike_gallery for h in searcher.query_vector(vector, 2))
    assert searcher.info().unlike_check
    # kept in the manifest: a saved and re-loaded index applies it
    searcher.save(tmp_path / "index")
    loaded = Searcher.load(tmp_path / "index")
    assert loaded.verdicts.checks_novelty and all(h.unlike_gallery for h in loaded.query(noise, k=2))
    # an index without the check: None, nothing marked
    loaded.set_verdicts(Verdicts())
    assert loaded.unlike_gallery(noise) is None and not loaded.info().unlike_check


def test_the_app_says_why_there_is_no_good_match(photo_searcher):
    from simlib.app import GalleryService
    from simlib.app.results import UNLIKE_BANNER, banner_text

    searcher, _, _ = photo_searcher
    service = GalleryService(searcher)
    noise = np.random.default_rng(4).integers(0, 256, (80, 60, 3), dtype=np.uint8)
    result = service.search(noise, 3)
    body = result.to_json()
    assert body["no_good_match"] is True and body["unlike_gallery"] is True and body["threshold"] is None
    assert result.banner() == UNLIKE_BANNER and "unlike anything in the gallery" in banner_text(body)
    good = service.search(np.asarray(_photo(600)), 3).to_json()
    assert good["no_good_match"] is False and good["unlike_gallery"] is False and banner_text(good) == ""
    # a result opened for its explanation is judged as the search judged it
    picked = body["hits"][0]["id"]
    scored = service.score(noise, picked)
    assert scored.unlike_gallery and scored.weak
    assert not service.score(np.asarray(_photo(600)), picked).unlike_gallery


def test_the_cli_says_why_there_is_no_good_match(photo_searcher, tmp_path):
    from tests.support.cli import run_cli

    searcher, _, _ = photo_searcher
    searcher.save(tmp_path / "index")
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (80, 60, 3), dtype=np.uint8)).save(noise)
    res = run_cli("search", str(noise), "--index", str(tmp_path / "index"), "-k", "2", "--json")
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert body["no_good_match"] is True and body["unlike_gallery"] is True
    assert all(h["unlike_gallery"] and h["weak"] for h in body["hits"])
    text = run_cli("search", str(noise), "--index", str(tmp_path / "index"), "-k", "2").stdout
    assert text.startswith("no good match: this image looks unlike anything in the gallery")
    photo = tmp_path / "photo.png"
    _photo(700).save(photo)
    calm = json.loads(run_cli("search", str(photo), "--index", str(tmp_path / "index"), "--json").stdout)
    assert calm["no_good_match"] is False and calm["unlike_gallery"] is False
