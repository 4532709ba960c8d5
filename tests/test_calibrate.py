"""The "no good match" threshold: brute-force check of the cut-off, and noise finds nothing good."""

import dataclasses

import numpy as np
import pytest

from simlib.errors import SimlibError
from simlib.search import Searcher, no_good_match
from simlib.search.calibrate import MIN_SUPPORT, calibrate_threshold, perturb, precision_threshold
from tests.support.vectors import stratified_rows


def brute_force_threshold(scores, correct, target):
    """Try every score as a cut-off; keep the lowest whose kept set (>= cut) has enough precision."""
    best = None
    for t in sorted(set(scores.tolist())):
        kept = scores >= t
        if kept.sum() >= MIN_SUPPORT and correct[kept].mean() >= target and best is None:
            best = t
    return best


def test_precision_threshold_matches_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(MIN_SUPPORT, 60))
        scores = np.round(rng.uniform(0, 1, n), 2)  # rounded: ties happen
        correct = rng.random(n) < scores  # higher scores are right more often
        target = float(rng.choice([0.5, 0.8, 0.9]))
        want = brute_force_threshold(scores, correct, target)
        got, precision, reached = precision_threshold(scores, correct, target)
        assert reached == (want is not None), trial
        if reached:
            assert got == want and precision >= target
    with pytest.raises(SimlibError, match="at least"):
        precision_threshold(np.ones(2), np.ones(2, bool), 0.9)


@pytest.mark.integration  # real images, a ResNet50
def test_perturb_is_seeded_and_changes_the_image(small_table):
    a, b, c = perturb(small_table.paths[0], 1), perturb(small_table.paths[0], 1), perturb(small_table.paths[0], 2)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and a.size != (0, 0)
    assert a.size != c.size or not np.array_equal(np.asarray(a), np.asarray(c))


@pytest.fixture(scope="module")
def calibrated(tiny_model, product_table, tmp_path_factory):
    """200 real product images (8 classes x 25), calibrated on a 20 % validation split, saved and reloaded."""
    table = product_table.subset(stratified_rows(product_table.labels, 8, 25))
    searcher, _ = Searcher.from_table(tiny_model, table, progress=False)
    threshold = calibrate_threshold(searcher, target=0.9, seed=0)
    assert searcher.calibration is None  # calibrating computes; the searcher keeps it when told to
    searcher.set_threshold(threshold)
    out = searcher.save(tmp_path_factory.mktemp("cal") / "index")
    return Searcher.load(out), threshold, table


@pytest.mark.integration  # real images, a ResNet50
def test_calibration_is_saved_and_marks_weak_hits(calibrated):
    searcher, threshold, table = calibrated
    assert searcher.calibration == threshold
    assert threshold.method == "top-1 same-class precision" and threshold.n_queries == 40
    assert threshold.reached and threshold.precision >= 0.9 and searcher.threshold == threshold.score
    assert threshold.summary().startswith(f"{threshold.score:.4f} (top-1 same-class precision")
    # real gallery images still find good matches: the threshold is not simply above everything
    good = [not no_good_match(searcher.query(p, k=3, exclude_self=True)) for p in table.paths[::8]]
    assert 0 < sum(good) < len(good)


@pytest.mark.integration  # real images, a ResNet50
def test_pure_noise_gets_no_good_match(calibrated):
    searcher, _, _ = calibrated
    for seed in range(3):
        noise = np.random.default_rng(seed).integers(0, 256, (80, 60, 3)).astype(np.uint8)
        hits = searcher.query(noise, k=5)
        assert len(hits) == 5 and no_good_match(hits), [h.score for h in hits]


@pytest.mark.integration  # real images, a ResNet50
def test_label_free_calibration_uses_near_copies(calibrated, tiny_model):
    searcher, _, table = calibrated
    threshold = calibrate_threshold(searcher, dataclasses.replace(table, labels=None), percentile=5, seed=0)
    assert threshold.method == "near-copy score percentile" and threshold.n_queries == 40
    assert "percentile 5 of near-copy scores" in threshold.summary()
    # fresh near-copies (other seeds) of gallery images clear it about 95 % of the time
    rows = range(0, len(table), 10)
    copies = tiny_model.embed_images([perturb(table.paths[r], 1000 + r) for r in rows])
    originals = searcher.index.vectors_of([int(table.ids[r]) for r in rows])
    assert np.mean(np.sum(copies * originals, axis=1) >= threshold.score) >= 0.8


def _colour_gallery(folder, n_classes: int, per_class: int, seed: int = 0, shuffle_labels: bool = False):
    """PNG files of noisy solid colours, one colour per class (the tiny backbone separates them)."""
    from PIL import Image

    from simlib.data import ImageTable

    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (n_classes, 3))
    paths, labels = [], []
    for c in range(n_classes):
        for i in range(per_class):
            img = np.clip(colours[c] + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8)
            path = folder / f"c{c}_{i}.png"
            Image.fromarray(img).save(path)
            paths.append(str(path))
            labels.append(f"class{c}")
    labels = np.asarray(labels, dtype=object)
    if shuffle_labels:  # labels the images do not show: no model can reach a precise cut-off
        labels = rng.permutation(labels)
    return ImageTable(ids=np.arange(len(paths)), paths=tuple(paths), labels=labels, name="colours")


@pytest.mark.parametrize("shuffle", [False, True])
def test_calibration_says_whether_the_model_supports_the_threshold(tmp_path, shuffle):
    from simlib.config import ModelConfig
    from simlib.model import Embedder

    table = _colour_gallery(tmp_path, 6, 10, shuffle_labels=shuffle)
    embedder = Embedder.build(ModelConfig(backbone="tiny", image_size=32, embedding_dim=16, weights="none"))
    searcher, _ = Searcher.from_table(embedder, table, progress=False)
    threshold = calibrate_threshold(searcher, target=0.9, seed=0)
    searcher.set_threshold(threshold)
    assert 0.0 <= threshold.coverage <= 1.0
    assert threshold.supported == (threshold.reached and threshold.coverage >= 0.25)
    noise = np.random.default_rng(9).integers(0, 256, (40, 40, 3)).astype(np.uint8)
    if shuffle:  # the labels are noise: the threshold cannot be supported, so nothing is called weak
        assert not threshold.supported and not threshold.usable
        assert searcher.threshold is None and searcher.calibration.score == threshold.score
        assert threshold.unsupported_note().startswith("This model cannot tell good matches from bad ones")
        assert not no_good_match(searcher.query(noise, k=3))
    else:  # colours are easy: most queries clear a 0.9-precision cut, and noise does not
        assert threshold.supported and threshold.coverage >= 0.5 and threshold.unsupported_note() == ""
        assert searcher.threshold == threshold.score
        assert not no_good_match(searcher.query(table.paths[0], k=3))


def test_a_threshold_words_its_own_notes():
    """One wording for every caller (CLI, open_gallery, the app): the summary and the unsupported note."""
    from simlib.index import Threshold

    unsupported = Threshold(
        score=0.9997, method="top-1 same-class precision", n_queries=978, target=0.9, precision=0.91,
        reached=True, coverage=0.03, supported=False,
    )  # fmt: skip
    assert unsupported.summary() == (
        "0.9997 (top-1 same-class precision 0.91 above it, target 0.9; 978 validation queries, 3% of them clear it)"
    )
    note = unsupported.unsupported_note()
    assert note.startswith("This model cannot tell good matches from bad ones: only 3% of the calibration queries")
    assert "90% same-class precision" in note and note.endswith('"no good match" is never said.')
    assert unsupported.warnings() == [note] and unsupported.not_reached_note() == ""
    missed = Threshold(score=0.5, method="top-1 same-class precision", target=0.9, precision=0.6, reached=False)
    assert "no cut-off reaches precision 0.9" in missed.not_reached_note()
    assert "no score gives its top-1 results 90% same-class precision" in missed.unsupported_note()
    old = Threshold(score=0.7, method="test")  # calibrated before coverage and support were recorded
    assert old.usable and old.warnings() == [] and old.summary() == "0.7000 (test; 0 validation queries)"
