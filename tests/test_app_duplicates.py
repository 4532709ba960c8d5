"""The app's near-duplicates panel: the planted groups of a small messy photo folder, through the served API."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.messy import make_messy_folder
from simlib.app.duplicates import sheet_items, summary_text
from simlib.photos.duplicates import Group, Member, Review
from tests.support.photos import product_like_sources, tiny_config
from tests.support.servers import served_demo


def _member(i: int, score: float = 1.0) -> Member:
    return Member(i, f"/photos/p{i}.jpg", 40 * (3 - i), 30, 100, 0.0, score)


def test_the_contact_sheet_puts_each_keep_first_and_says_nothing_is_deleted():
    groups = (Group(_member(0), (_member(1, 0.99912), _member(2, 0.99801))), Group(_member(3), (_member(4, 0.999),)))
    review = Review(groups, 0.9975, 0.98, None, False)
    items = sheet_items(review.groups)
    assert [p for p, _ in items] == [f"/photos/p{i}.jpg" for i in range(5)]
    assert items[0][1] == "group 1: keep, 120x30" and items[1][1] == "group 1: copy 0.99912, 80x30"
    assert items[3][1].startswith("group 2: keep")
    assert len(sheet_items(review.groups, max_groups=1)) == 3
    text = summary_text(review)
    assert "2 group(s)" in text and "5 images" in text and "deletes or moves" in text
    assert "No near-duplicates" in summary_text(Review((), 0.9975, None, None, False))


@pytest.mark.integration  # serves the app
def test_the_panel_lists_the_planted_groups_and_changes_nothing(tmp_path):
    from gradio_client import Client

    from simlib.model import Embedder
    from simlib.photos.build import index_folder
    from simlib.photos.store import work_dir
    from simlib.search import Searcher

    folder = tmp_path / "photos"
    sources = product_like_sources(tmp_path / "src", 30, seed=5)
    messy = make_messy_folder(folder, sources, seed=2, side=(200, 260), kinds=("jpeg",), hostile=False)
    out = tmp_path / "index"
    index_folder(Embedder.build(tiny_config()), folder, out, progress=False)
    manifest = (out / "manifest.json").read_bytes()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    with served_demo(Searcher.load(out), k=4, artifacts=out) as url:
        c = Client(url, download_files=str(tmp_path / "downloads"), verbose=False)
        sheet, summary, body = c.predict(api_name="/duplicates")
        again = c.predict(api_name="/duplicates")[2]
    assert again == body and body["calibration"]["supported"], body.get("calibration")
    found = {frozenset([g["keep"]["gallery_path"], *(m["gallery_path"] for m in g["others"])]) for g in body["groups"]}
    found_pairs = {frozenset((a, b)) for g in found for a in g for b in g if a < b}
    planted = {frozenset(str(Path(p).resolve()) for p in g) for g in messy.groups}
    planted_pairs = {frozenset((a, b)) for g in planted for a in g for b in g if a < b}
    real = {str(Path(p).resolve()): messy.copy_kind.get(p, "original") for p in messy.images}
    uncropped = {p for p in planted_pairs if all(real[x] != "cropped" for x in p)}
    assert found_pairs <= planted_pairs and uncropped and uncropped <= found_pairs
    assert len(sheet) == sum(len(g) for g in found)  # every image of every group on the contact sheet
    assert sum("keep" in tile["caption"] for tile in sheet) == len(found)
    assert f"{len(found)} group(s) of near-duplicates" in summary and "deletes or moves" in summary
    # read-only: no file moved or deleted, the index and its work folder untouched
    assert sorted(p for p in folder.rglob("*") if p.is_file()) == files
    assert (out / "manifest.json").read_bytes() == manifest
    assert not (work_dir(out) / "fingerprints.npz").exists()
