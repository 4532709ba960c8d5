"""Every benchmark script runs in smoke mode and writes the JSON rows its README table needs."""

import importlib
import json

import pytest

SCRIPTS = {
    "embed": {"image_px", "ceiling_img_s", "simlib_img_s", "loop_img_s", "simlib/ceiling", "simlib/loop", "traces"},
    "precision": {"image_px", "float32_img_s", "bf16_img_s", "speedup", "cos_mean", "recall1_diff"},
    "query": {"path", "image_px", "p50_ms", "p95_ms", "traces"},
    "index": {"n", "kind", "build_s", "mem_mib", "qps_batched", "qps_single", "recall@10"},
    "train": {"feed", "triplets_s", "ratio"},
    "folder": {"step"},
}
# Rows of another shape within a table: index reload probes, the end-to-end training run.
OTHER_ROWS = {
    "index": (lambda r: r["setting"].startswith("loaded"), {"n", "kind", "setting", "load_s", "mem_mib", "qps_single"}),
    "train": (lambda r: "end to end" in r["feed"], {"feed", "images", "epochs", "seconds", "setup_s"}),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.integration  # real data, ResNet50s and a server
# One epoch of a few steps from random weights may well collapse; the warning itself is tested in test_train.
@pytest.mark.filterwarnings("ignore:epoch .* embeddings are collapsing:RuntimeWarning")
def test_benchmark_smoke_run_writes_its_rows(name, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("SIMLIB_DATA", str(data_root))
    module = importlib.import_module(f"benchmarks.bench_{name}")
    payload = module.main(["--smoke", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / f"{name}-smoke.json").read_text())
    assert saved["smoke"] is True and saved["benchmark"] == name
    assert {"cpu", "cores", "date_utc", "keras", "faiss-cpu"} <= set(saved["machine"])
    rows = saved["rows"]
    assert rows and len(rows) == len(payload["rows"])
    is_other, other_keys = OTHER_ROWS.get(name, (lambda r: False, set()))
    others = [r for r in rows if is_other(r)]
    measured = [r for r in rows if r.get("skipped") is None and not is_other(r)]
    assert measured and all(SCRIPTS[name] <= set(r) for r in measured)
    assert all(other_keys <= set(r) for r in others)
    if name in ("embed", "query"):
        assert all(r["traces"] == 1 for r in measured if r.get("traces") is not None)
    if name == "query":  # the app's API three ways, each checked against Searcher.query by the script
        assert {r["path"] for r in measured} >= {"Searcher.query", "HTTP API (kept-alive connection)"}
    if name == "index":
        flat = [r for r in measured if r["kind"] == "flat"]
        assert flat and all(r["recall@10"] == 1.0 for r in flat)
        assert {r["kind"] for r in rows} == {"flat", "hnsw", "ivfpq"}
        assert sorted(r["setting"] for r in others if r["kind"] == "flat") == ["loaded (mmap)", "loaded (read)"]
    if name == "folder":  # resumed to the same index; the sync embedded only the added photos
        resume = next(r for r in rows if r["step"].startswith("resume"))
        assert resume["identical"] is True and resume["resumed"] > 0
        sync = next(r for r in rows if r["step"].startswith("sync +"))
        assert sync["images"] == sync["added"] > 0 and sync["removed"] > 0
    if name == "train":
        assert any(r["feed"].startswith("simlib.train.fit (") and r["triplets_s"] > 0 for r in measured)
        assert len(others) == 1 and others[0]["seconds"] > others[0]["setup_s"] > 0


def test_report_renders_every_result_and_names_the_missing(tmp_path):
    from benchmarks import report

    row = {"image_px": 64, "ceiling_img_s": 200.0, "simlib_img_s": 190.0, "simlib/ceiling": 0.95}
    machine = {"date_utc": "2026-01-01T00:00:00+00:00", "cpu": "test CPU", "cores": 2, "python": "3.11", "keras": "3"}
    (tmp_path / "embed.json").write_text(json.dumps({"machine": machine, "rows": [row]}))
    text = report.render(tmp_path)
    assert "test CPU, 2 cores" in text and "| 64 | 200 | 190 |" in text and "0.95" in text
    assert "not run (`python -m benchmarks.bench_index`)" in text
