"""The evaluation protocol on real images: pixels, models, near-duplicates, saved results."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from simlib.evaluation import (
    COLUMNS,
    compare,
    format_table,
    near_duplicate_retrieval,
    pixel_embeddings,
    save_results,
)
from simlib.train import load_images

pytestmark = pytest.mark.integration  # every test reads the product set


def test_pixel_embeddings_are_unit_thumbnails(small_table):
    images = load_images(small_table.subset(range(5)), 32)
    e = pixel_embeddings(images)
    assert e.shape == (5, 16 * 16 * 3)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    # a uniform image is a uniform thumbnail
    flat = pixel_embeddings(np.full((1, 32, 32, 3), 200, np.uint8))
    np.testing.assert_allclose(flat, np.full_like(flat, 1 / np.sqrt(flat.size)), rtol=1e-5)


def test_near_duplicate_retrieval_scores_the_original_as_target(small_table):
    images = load_images(small_table, 32)
    exact = near_duplicate_retrieval(pixel_embeddings, images, queries=images)
    assert exact["recall@1"] == 1.0 and exact["n_queries"] == len(images)
    # a query set that points every image at the wrong original scores zero
    shifted = near_duplicate_retrieval(pixel_embeddings, images, queries=np.roll(images, 1, axis=0))
    assert shifted["recall@1"] < 0.2
    augmented = near_duplicate_retrieval(pixel_embeddings, images, seed=0)
    assert 0.0 < augmented["recall@1"] <= 1.0


def test_compare_table_and_results_files(small_table, tiny_model, tmp_path):
    result = compare(small_table, {"untrained": tiny_model})
    rows = result.rows
    assert [(r["split"], r["method"]) for r in rows] == [
        ("image", "pixels"),
        ("image", "untrained"),
        ("near-duplicate", "pixels"),
        ("near-duplicate", "untrained"),
        ("class", "pixels"),
        ("class", "untrained"),
    ]
    for r in rows:
        assert set(r) == set(COLUMNS) and all(0.0 <= r[m] <= 1.0 for m in ("recall@1", "recall@10", "map@r"))
        assert r["recall@1"] <= r["recall@5"] <= r["recall@10"]
    assert "near-duplicate" in format_table(rows)
    # each pair of methods on the same queries, Recall@1 and mAP@R, with a verdict chosen from its interval
    pairs = {(d.split, d.part, d.a, d.b, d.metric) for d in result.differences}
    assert pairs == {
        (split, part, "untrained", "pixels", metric)
        for split, part in (("image", "all"), ("near-duplicate", "all"), ("class", "unseen"))
        for metric in ("recall@1", "map@r")
    }
    for d in result.differences:
        assert d.low <= d.difference <= d.high and 0 < d.p_value <= 1 and d.verdict in d.phrase
        a, b = result.row(d.split, d.part, d.a), result.row(d.split, d.part, d.b)
        assert d.difference == pytest.approx(a[d.metric] - b[d.metric])
    assert "no detectable difference" in result.differences_table() or "beats" in result.differences_table()
    out = save_results(result, tmp_path / "results", {"note": "test"})
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == rows and saved["meta"]["note"] == "test" and saved["machine"]["cpus"] >= 1
    assert len(saved["differences"]) == len(result.differences) and saved["meta"]["confidence"] == 0.95
    with open(out / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)


def test_cli_compare(small_index_dir, tmp_path, product_table):
    from tests.support.cli import run_cli
    from tests.support.galleries import labelled_folder, table_items
    from tests.support.vectors import stratified_rows

    # a small class folder: the full product set takes minutes
    data = labelled_folder(
        tmp_path / "folder", table_items(product_table, stratified_rows(product_table.labels, 4, 8, seed=2))
    )
    proc = run_cli(
        "compare", "--data", str(data), "--model", str(small_index_dir / "model"), "--out", str(tmp_path / "res"),
        "--json", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = printed["rows"]
    assert {r["method"] for r in rows} == {"pixels", "untrained backbone", "trained"}
    pairs = {(d["a"], d["b"]) for d in printed["differences"]}
    assert pairs >= {("trained", "pixels"), ("trained", "untrained backbone")}
    saved = json.loads((tmp_path / "res" / "results.json").read_text())
    assert saved["differences"] == printed["differences"]
    assert (tmp_path / "res" / "results.csv").is_file()
