"""simlib.app.GalleryService without a server: a tiny model over a synthetic gallery of coloured shapes.

Fast tier: no ResNet50, no data folder, no Gradio server.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from simlib.app import GalleryService
from simlib.app.inputs import make_filters
from simlib.app.results import (
    COLLAPSE_AT,
    MAX_FILTERS,
    UNTRAINED_COLLAPSE_AT,
    collapse_threshold,
    filter_fields,
    is_untrained,
    status_text,
)
from simlib.app.service import EXPLAIN_SIZE, MAX_K
from simlib.errors import SimlibError
from tests.support.calibration import calibrated

SHAPES = {"circle": (220, 40, 40), "square": (40, 180, 60), "triangle": (50, 70, 220)}
PER_CLASS = 4
SIZE = (48, 40)  # width, height: not square, so the explanation's aspect is visible


def shape_image(shape: str, n: int) -> np.ndarray:
    """A coloured shape on white, placed and sized by ``n`` (no two images of a class are equal)."""
    img = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(img)
    x, y, r = 6 + 3 * n, 5 + 2 * n, 10 + n
    box = (x, y, x + 2 * r, y + 2 * r)
    if shape == "circle":
        draw.ellipse(box, fill=SHAPES[shape])
    elif shape == "square":
        draw.rectangle(box, fill=SHAPES[shape])
    else:
        draw.polygon([(x + r, y), (x, y + 2 * r), (x + 2 * r, y + 2 * r)], fill=SHAPES[shape])
    return np.asarray(img)


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory) -> Path:
    """``<shape>/<n>.png`` for three shapes, plus ``circle/copy.png``: an exact copy of ``circle/0.png``."""
    root = tmp_path_factory.mktemp("shapes")
    for shape in SHAPES:
        (root / shape).mkdir()
        for n in range(PER_CLASS):
            Image.fromarray(shape_image(shape, n)).save(root / shape / f"{n}.png")
    shutil.copy(root / "circle" / "0.png", root / "circle" / "copy.png")
    return root


@pytest.fixture(scope="module")
def artifacts_template(tmp_path_factory, gallery_dir) -> Path:
    """An artifacts folder holding ``index/``: the gallery indexed by an untrained tiny model."""
    from simlib.config import ModelConfig
    from simlib.data import load_image_folder
    from simlib.model import Embedder
    from simlib.search import Searcher

    embedder = Embedder.build(ModelConfig(backbone="tiny", image_size=32, embedding_dim=16, weights="none"))
    searcher, _ = Searcher.from_table(embedder, load_image_folder(gallery_dir), progress=False)
    artifacts = tmp_path_factory.mktemp("artifacts")
    searcher.save(artifacts / "index")
    return artifacts


@pytest.fixture(scope="module")
def service(artifacts_template) -> GalleryService:
    """A read-only service (no artifacts folder: no feedback, no adding), shared by the module."""
    from simlib.search import Searcher

    return GalleryService(Searcher.load(artifacts_template / "index"))


@pytest.fixture
def writable(artifacts_template, tmp_path) -> Path:
    """A fresh copy of the artifacts folder, for a test that writes into it."""
    shutil.copytree(artifacts_template, tmp_path / "artifacts")
    return tmp_path / "artifacts"


def open_service(artifacts: Path, **options) -> GalleryService:
    from simlib.search import Searcher

    return GalleryService(Searcher.load(artifacts / "index"), artifacts=artifacts, **options)


def path_of(gallery_dir: Path, shape: str, n: int) -> str:
    return str((gallery_dir / shape / f"{n}.png").resolve())


# ----------------------------------------------------------------------------- search
def test_search_returns_k_hits_best_first_as_the_searcher_ranks_them(service, gallery_dir):
    query = path_of(gallery_dir, "square", 1)
    found = service.search(query, 4)
    expected = service.searcher.query(query, k=4)
    assert [h.id for h in found.hits] == [h.id for h in expected] and len(found.hits) == 4
    assert found.hits[0].path == query and found.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in found.hits] == sorted((h.score for h in found.hits), reverse=True)
    gallery, results, status = found.outputs()
    assert gallery == [(h.path, h.caption()) for h in found.hits]
    assert gallery[0][1].startswith("#1 · 1.000 · square")
    assert [h["id"] for h in results["hits"]] == [h.id for h in found.hits]
    # the JSON names the image relative to the gallery's root, never by the server's path
    shown = results["hits"][0]["gallery_path"]
    assert not Path(shown).is_absolute() and Path(query).as_posix().endswith("/" + shown)
    assert "path" not in results["hits"][0]
    assert results["k"] == 4 and results["collapse"] is None and results["merged"] is None
    assert status.startswith("gallery: 13 images") and "untrained" in status and "4 results" in status


def test_search_refuses_no_image_a_bad_k_and_a_bad_file(service, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(SimlibError, match="no query image"):
        service.search(None, 3)
    for k in (0, MAX_K + 1):
        with pytest.raises(SimlibError, match=f"between 1 and {MAX_K}"):
            service.search(shape_image("circle", 1), k)
    with pytest.raises(SimlibError, match="not an image"):
        service.search(str(not_image), 3)


def test_filters_apply_inside_the_search(service):
    from simlib.app.inputs import make_filters

    assert service.filter_choices == {"label": ["circle", "square", "triangle"]}
    filters = make_filters(list(service.filter_choices), [["triangle"]])
    found = service.search(shape_image("circle", 2), 10, filters)
    # every triangle comes back (not the triangles among an unfiltered top 10), and nothing else
    assert [h.label for h in found.hits] == ["triangle"] * PER_CLASS
    assert found.to_json()["filters"] == {"label": ["triangle"]}
    assert service.search(shape_image("circle", 2), 10, {"label": "square"}).hits[0].label == "square"


def test_collapse_merges_the_copy_and_counts_it(service, gallery_dir):
    query = path_of(gallery_dir, "circle", 0)
    plain = service.search(query, 3)
    copy_id = service.searcher.ids_of_path(gallery_dir / "circle" / "copy.png")[0]
    assert copy_id in [h.id for h in plain.hits[:2]]  # the copy ranks with its original
    found = service.search(query, 3, collapse=0.99999)
    assert found.hits[0].duplicates == 1 and copy_id not in [h.id for h in found.hits[1:]]
    assert len(found.hits) == 3 and found.merged == 1 and found.to_json()["collapse"] == 0.99999
    assert found.gallery[0][1].endswith(" · +1 copy") and found.status.endswith("3 results, 1 near-duplicate merged")
    assert service.collapse == 0.9998  # the untrained model's floor (no calibration)


def test_weak_flags_and_no_good_match(service, gallery_dir):
    query = path_of(gallery_dir, "circle", 1)
    found = service.search(query, 5)
    assert found.threshold is None and found.no_good_match is None and found.banner() == ""
    third = found.hits[2].score
    with calibrated(service.searcher, third + 1e-6):
        found = service.search(query, 5)
        noise = np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)
        with calibrated(service.searcher, 1.01):
            nothing = service.search(noise, 5)
    assert [h.weak for h in found.hits] == [False, False, True, True, True]
    assert [caption.endswith(" · low confidence") for _, caption in found.gallery] == [False, False, True, True, True]
    assert found.no_good_match is False and found.banner() == ""
    assert nothing.no_good_match is True and all(h.weak for h in nothing.hits)
    assert nothing.banner().startswith("### Low confidence: no good match") and "1.0100" in nothing.banner()
    assert nothing.to_json()["no_good_match"] is True and nothing.to_json()["threshold"] == 1.01


def test_captions_and_the_cli_table_share_the_hit_formatting():
    from simlib.search import Hit, format_hits

    hits = [Hit(1, 7, 0.98765, "/g/a.png", "circle", {}, 2, False), Hit(2, 3, 0.5, "/g/b.png", None, {}, 0, True)]
    assert [h.caption() for h in hits] == ["#1 · 0.988 · circle · +2 copies", "#2 · 0.500 · low confidence"]
    table = format_hits(hits, collapse=True).splitlines()
    assert table[0].split() == ["rank", "score", "label", "path", "merged"]
    assert table[1].split() == ["1", "0.988", "circle", "/g/a.png", "+2"]
    assert table[2].split() == ["2", "0.500", "-", "/g/b.png", "+0", "low", "confidence"]
    assert format_hits(hits[:1]).splitlines()[1].split() == ["1", "0.988", "circle", "/g/a.png"]


# ----------------------------------------------------------------------------- score and explain
def test_score_is_the_searchs_score_and_checks_the_id(service, gallery_dir):
    query = shape_image("square", 3)
    found = service.search(query, 3)
    for hit in found.hits:
        scored = service.score(query, hit.id)
        assert (scored.id, scored.path, scored.weak) == (hit.id, hit.path, hit.weak)
        assert scored.score == pytest.approx(hit.score, abs=1e-5)
    assert service.score(query, float(hit.id)).id == hit.id and service.score(query, str(hit.id)).id == hit.id
    with pytest.raises(SimlibError, match="not in the index"):
        service.score(query, 10_000)
    with pytest.raises(SimlibError, match="whole number"):
        service.score(query, "3; rm -rf")


def test_explain_shows_both_images_with_heat_maps(service, gallery_dir):
    query = path_of(gallery_dir, "triangle", 0)
    second = service.search(query, 2).hits[1]
    e = service.explain(query, second.id, rank=2)
    height = round(SIZE[1] * EXPLAIN_SIZE / SIZE[0])  # enlarged to EXPLAIN_SIZE on the longer side
    for image, heat in ((e.query, e.query_heat), (e.result, e.result_heat)):
        assert image.shape == heat.shape == (height, EXPLAIN_SIZE, 3)
        assert image.dtype == heat.dtype == np.uint8 and not np.array_equal(image, heat)
    assert e.details() == {"id": second.id, "score": e.hit.score, "weak": False, "label": second.label}
    assert e.hit.score == pytest.approx(second.score, abs=1e-5)
    assert e.text.startswith(f"**#2** · cosine similarity **{second.score:.4f}** · {second.label}")
    with calibrated(service.searcher, 1.01):
        assert service.explain(query, second.id).text.endswith("· **weak** (under the calibrated 1.0100)")
    big = np.zeros((1000, 600, 3), np.uint8)  # a large upload is shrunk, aspect kept
    assert service.explain(big, second.id).query_heat.shape == (EXPLAIN_SIZE, 154, 3)
    with pytest.raises(SimlibError, match="no query image"):
        service.explain(None, second.id)


# ----------------------------------------------------------------------------- feedback and add
def test_feedback_is_stored_with_the_recomputed_score(writable, gallery_dir):
    from simlib.search.feedback import FeedbackStore

    service = open_service(writable)
    query = shape_image("circle", 3)
    hits = service.search(query, 3).hits
    first = service.feedback(query, hits[1].id, "similar")
    second = service.feedback(query, hits[2].id, "not_similar")
    entries = FeedbackStore(writable / "feedback").read()
    assert [(e.result_id, e.verdict, e.result_path) for e in entries] == [
        (hits[1].id, "similar", hits[1].path),
        (hits[2].id, "not_similar", hits[2].path),
    ]
    assert [e.score for e in entries] == pytest.approx([hits[1].score, hits[2].score], abs=1e-5)
    assert {e.model_fingerprint for e in entries} == {service.searcher.fingerprint}
    # the query is stored once, as PNG under its pixels' hash
    assert first.query == second.query and Path(first.query).parent == (writable / "feedback" / "queries").resolve()
    assert np.array_equal(np.asarray(Image.open(first.query)), query)
    with pytest.raises(SimlibError, match="verdict must be"):
        service.feedback(query, hits[1].id, "love it")
    with pytest.raises(SimlibError, match="no feedback"):
        GalleryService(service.searcher).feedback(query, hits[1].id, "similar")
    assert len(FeedbackStore(writable / "feedback").read()) == 2


def test_add_indexes_the_image_and_saves_reusing_the_model(writable):
    from simlib.search import Searcher

    service = open_service(writable, allow_add=True)
    model_files = sorted(p for p in (writable / "index" / "model").rglob("*") if p.is_file())
    inodes = [os.stat(p).st_ino for p in model_files]
    new = shape_image("square", 9)
    message, ids = service.add(Image.fromarray(new))
    assert ids == [13] and message.startswith("Added to the gallery as image 13") and "14 images" in message
    assert service.status().startswith("gallery: 14 images")
    # saved: a fresh load finds it, its file is the stored PNG, and the model files were linked, not rewritten
    reloaded = Searcher.load(writable / "index")
    first = reloaded.query(new, k=1)[0]
    assert first.id == 13 and first.score == pytest.approx(1.0, abs=1e-5)
    assert Path(first.path).parent == (writable / "gallery_uploads").resolve()
    assert np.array_equal(np.asarray(Image.open(first.path)), new)
    assert [os.stat(p).st_ino for p in model_files] == inodes
    message, ids = service.add(new)  # the same picture again: the same file, already indexed
    assert ids == [] and message.startswith("Not added: already in the index (id 13)")
    assert (
        len(Searcher.load(writable / "index").index) == 14 and len(list((writable / "gallery_uploads").iterdir())) == 1
    )
    with pytest.raises(SimlibError, match="--allow-add"):
        open_service(writable).add(new)
    with pytest.raises(SimlibError, match="artifacts folder"):
        GalleryService(service.searcher, allow_add=True)


def test_store_png_is_content_addressed(tmp_path):
    from simlib.storage import store_png

    image = shape_image("triangle", 2)
    encoded = io.BytesIO()
    Image.fromarray(image).save(encoded, "PNG")
    a = store_png(image, tmp_path / "store")
    b = store_png(encoded.getvalue(), tmp_path / "store")  # the same pixels, however they come
    c = store_png(shape_image("triangle", 3), tmp_path / "store")
    assert a == b != c and a.suffix == ".png" and len(list((tmp_path / "store").iterdir())) == 2
    assert np.array_equal(np.asarray(Image.open(a)), image)


# ----------------------------------------------------------------------------- locking
def test_concurrent_searches_and_adds_see_consistent_galleries(writable):
    """Searches from several threads while another adds images: no errors, and every answer's hits
    and status come from the same state of the gallery (all of it, at k above its size)."""
    service = open_service(writable, allow_add=True)
    queries = [shape_image(s, n) for s in SHAPES for n in range(2)]
    n_added = 4
    stop = threading.Event()

    def searching(i: int) -> list[tuple[int, int]]:
        seen = []
        while not stop.is_set() or not seen:
            found = service.search(queries[i % len(queries)], MAX_K)
            seen.append((len(found.hits), found.info["gallery_size"]))
        return seen

    def adding() -> list[int]:
        try:
            new = [np.random.default_rng(n).integers(0, 256, (40, 48, 3), np.uint8) for n in range(n_added)]
            return [service.add(image).ids[0] for image in new]
        finally:
            stop.set()

    with ThreadPoolExecutor(5) as pool:
        searches = [pool.submit(searching, i) for i in range(4)]
        added = pool.submit(adding).result(timeout=300)
        seen = [pair for s in searches for pair in s.result(timeout=300)]
    assert added == list(range(13, 13 + n_added))
    assert all(n_hits == size for n_hits, size in seen), seen
    assert {size for _, size in seen} <= set(range(13, 14 + n_added))
    # the same query from many threads at once gets the same answer
    query = queries[0]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: [(h.id, round(h.score, 5)) for h in service.search(query, 5).hits], range(8)))
    assert all(a == answers[0] for a in answers)


def test_every_index_read_and_change_holds_the_lock(writable):
    """Deterministic half of the locking test: each index method the service reaches runs under its lock."""
    service = open_service(writable, allow_add=True)
    index = service.searcher.index
    calls: list[tuple[str, bool]] = []

    def checked(name: str):
        method = getattr(index, name)

        def call(*args, **kwargs):
            calls.append((name, service.lock.locked()))
            return method(*args, **kwargs)

        return call

    for name in ("search", "record", "records", "vectors_of", "add", "save"):
        setattr(index, name, checked(name))  # on this instance only
    query = shape_image("square", 2)
    hit = service.search(query, 3, collapse=0.99).hits[1]
    service.score(query, hit.id)
    service.explain(query, hit.id)
    service.feedback(query, hit.id, "similar")
    service.add(np.random.default_rng(5).integers(0, 256, (40, 48, 3), np.uint8))
    assert {name for name, _ in calls} >= {"search", "record", "vectors_of", "add", "save"}
    assert all(held for _, held in calls), [name for name, held in calls if not held]


# ----------------------------------------------------------------------------- pure helpers


def test_filter_fields_and_filters():
    values = {"baseColour": ["Blue", "Red"], "gender": ["Men", "Women"], "label": ["A", "B"], "season": ["S", "W"]}
    assert list(filter_fields(values)) == ["baseColour", "gender"]
    assert list(filter_fields({"season": ["S", "W"], "label": ["A", "B"]})) == ["label", "season"]
    assert len(filter_fields({f"a{i}": ["x", "y"] for i in range(9)})) == MAX_FILTERS
    assert make_filters(["gender", "baseColour", "label"], [["Men"], [], "any"]) == {"gender": ["Men"]}


def test_collapse_threshold_suits_the_model():
    untrained = {"weights": "none", "trained": False, "threshold": None}
    assert collapse_threshold(untrained) == UNTRAINED_COLLAPSE_AT
    assert collapse_threshold({**untrained, "trained": True}) == COLLAPSE_AT
    assert collapse_threshold({**untrained, "weights": "imagenet"}) == COLLAPSE_AT
    # Halfway from the calibrated "good match" score to 1, when that is stricter.
    assert collapse_threshold({**untrained, "threshold": 0.9997}) == pytest.approx(0.99985)
    assert collapse_threshold({**untrained, "trained": True, "threshold": 0.7}) == COLLAPSE_AT
    assert collapse_threshold({**untrained, "trained": True, "threshold": 0.98}) == pytest.approx(0.99)


def test_untrained_and_the_status_line():
    info = {"gallery_size": 12, "index_kind": "flat", "image_size": 32, "embedding_dim": 16}
    untrained = {**info, "weights": "none", "trained": False}
    assert is_untrained(untrained)
    assert not is_untrained({**untrained, "weights": "imagenet"}) and not is_untrained({**untrained, "trained": True})
    assert "trained" in status_text({**untrained, "trained": True}) and "query" not in status_text(untrained)
    assert "query: 12 ms, 3 results" in status_text(untrained, 0.012, 3)


def test_visitors_read_no_server_paths_and_plain_filter_names(tmp_path):
    from simlib.app.results import visitor_source
    from simlib.app.ui import field_label

    root = tmp_path / "artifacts"
    said = f"no trained model in {root} (looked for model/, course/model_labels/): a fresh model, backbone weights none"
    assert visitor_source(said, root) == "no trained model: a fresh model, backbone weights none"
    trained = f"{root.resolve()}/course/model_labels (the newest trained model in the artifacts folder)"
    assert visitor_source(trained, root).startswith("course/model_labels (")
    assert [field_label(f) for f in ("masterCategory", "baseColour", "label", "gender")] == [
        "Master category",
        "Base colour",
        "Label",
        "Gender",
    ]


def test_a_verdict_can_be_changed_and_taken_back(writable):
    from simlib.search.feedback import CLEARED, FeedbackStore, feedback_triplets

    service = open_service(writable)
    query = shape_image("square", 2)
    hit = service.search(query, 2).hits[1]
    assert service.verdict(query, hit.id) is None
    service.feedback(query, hit.id, "similar")
    service.feedback(query, hit.id, "not_similar")
    assert service.verdict(query, hit.id) == "not_similar"  # the latest counts
    store = FeedbackStore(writable / "feedback")
    assert len(store.read()) == 2 and [e.verdict for e in store.current().values()] == ["not_similar"]
    assert [(p, n) for _, p, n in feedback_triplets(store.path)] == [(None, hit.path)]
    service.feedback(query, hit.id, CLEARED)
    assert service.verdict(query, hit.id) is None and store.current() == {}
    assert feedback_triplets(store.path) == []


def test_calibrated_verdicts_word_the_results_and_merge_copies(writable, gallery_dir):
    """With verdicts stored in the index: captions give the probability of the same kind (not the cosine), the
    no-match cut decides the banner, and the model's copy cut (not a fixed cosine) merges copies."""
    from simlib.search.confidence import NoMatchCut, Verdicts
    from simlib.search.copies import CopyCut
    from simlib.search.probability import MatchCurve

    service = open_service(writable)
    searcher = service.searcher
    query = path_of(gallery_dir, "circle", 0)
    scores = [h.score for h in service.search(query, 5).hits]
    cut = (scores[1] + scores[2]) / 2  # between the 2nd and 3rd results
    curve = MatchCurve("score", ((scores[-1], 0.2), (scores[0], 0.9)), 0.1, 0.2, 0.25, 0.5, 40, 5)
    no_match = NoMatchCut(cut, 0.1, 0.08, 0.4, 0.95, 0.6, 0.8, 5.0, True, 40, 30, 10)
    copies = CopyCut(0.9999, None, 99.9, 0.999, 0.95, 0.95, 0.0, True, 0, 13, 20)
    searcher.set_verdicts(Verdicts(no_match, curve, copies))
    service = GalleryService(searcher)
    found = service.search(query, 5, collapse=service.collapse)
    assert service.collapse == copies and "as close as copies" in service.collapse_text
    assert found.hits[0].duplicates == 1  # circle/copy.png, an exact copy, merged by the calibrated cut
    captions = [c for _, c in found.gallery]
    assert captions[0].startswith("#1 · 90% same kind · circle · +1 copy")
    assert [c.endswith("low confidence") for c in captions] == [h.score < cut for h in found.hits]
    assert found.threshold == pytest.approx(cut) and found.banner() == ""
    with_cut_above = Verdicts(NoMatchCut(1.01, 0.1, 0.08, 0.4, 0.95, 0.6, 0.8, 5.0, True, 40, 30, 10), curve, copies)
    searcher.set_verdicts(with_cut_above)
    assert service.search(query, 3).banner().startswith("### Low confidence: no good match")
    unsupported = dataclasses.replace(with_cut_above.no_match, supported=False)
    searcher.set_verdicts(Verdicts(unsupported, curve, copies))
    nothing = service.search(query, 3)
    assert nothing.threshold is None and nothing.banner() == "" and not any(h.weak for h in nothing.hits)
