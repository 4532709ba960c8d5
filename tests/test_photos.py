"""Your own photos: resumable indexing (a real process killed with SIGKILL), sync, duplicates, the commands."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.messy import make_messy_folder
from simlib.errors import SimlibError
from simlib.photos.build import index_folder
from simlib.photos.store import FolderState, work_dir
from simlib.photos.sync import sync_index
from simlib.search import Searcher
from tests.support.cli import run_cli
from tests.support.galleries import synthetic_image
from tests.support.photos import product_like_sources, run_index_killed_at, tiny_config


@pytest.fixture(scope="module")
def model():
    from simlib.model import Embedder

    return Embedder.build(tiny_config())


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory) -> Path:
    return model.save(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    return make_messy_folder(root / "photos", product_like_sources(root / "src", 40), seed=1, side=(200, 300))


def _index_contents(index_dir: Path) -> tuple[list, np.ndarray]:
    searcher = Searcher.load(index_dir)
    records = sorted((r.id, r.path, r.label) for r in searcher.index.records())
    vectors = searcher.index.vectors_of([r[0] for r in records])
    return records, vectors


def _copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# ----------------------------------------------------------------------------- resumable indexing
@pytest.mark.parametrize(
    "stage",
    # a real process each (TensorFlow imported, ~7 s): mid-run in the fast tier, at the end in the slow one
    ["photos-chunk-1", pytest.param("photos-before-state", marks=pytest.mark.slow)],
)
def test_a_run_killed_with_sigkill_resumes_to_the_same_index(stage, messy, model, tmp_path):
    reference = index_folder(model, messy.root, tmp_path / "ref" / "index", batch_size=8, chunk_size=16, progress=False)
    out = tmp_path / "run" / "index"
    run_index_killed_at(messy.root, out, stage)
    if stage == "photos-chunk-1":
        chunks = sorted(p.name for p in work_dir(out).glob("run-*/chunk-*.npz"))
        assert chunks == ["chunk-000000.npz", "chunk-000001.npz"] and not out.exists()
    resumed = index_folder(model, messy.root, out, batch_size=8, chunk_size=16, progress=False)
    if stage == "photos-chunk-1":
        assert resumed.resumed == 32 and resumed.embedded == reference.embedded - 32
    ref_records, ref_vectors = _index_contents(reference.index_dir)
    records, vectors = _index_contents(out)
    assert records == ref_records  # same ids, paths and labels: nothing missing, nothing twice
    assert len({r[1] for r in records}) == len(records) == reference.indexed
    np.testing.assert_array_equal(vectors, ref_vectors)
    assert not list(work_dir(out).glob("run-*"))  # the chunks are gone once the index is saved
    assert FolderState.load(work_dir(out)) == FolderState.load(work_dir(reference.index_dir))


def test_a_restart_after_the_index_was_saved_syncs_and_embeds_nothing(messy, model, tmp_path):
    out = tmp_path / "index"
    first = index_folder(model, messy.root, out, batch_size=8, chunk_size=16, progress=False)
    assert first.indexed == len(messy.images) and first.resumed == 0
    report = sync_index(out)
    assert report.embedded == 0 and report.unchanged == first.indexed and not report.changed_anything


# ----------------------------------------------------------------------------- sync
def test_sync_embeds_only_what_changed(model, tmp_path):
    folder = tmp_path / "photos"
    sources = product_like_sources(tmp_path / "src", 30)
    for i, src in enumerate(sources[:20]):
        sub = folder / ("a" if i % 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, sub / f"p{i}.png")
    out = tmp_path / "index"
    index_folder(model, folder, out, batch_size=8, progress=False)
    before = Searcher.load(out)
    old_ids = {r.path: r.id for r in before.index.records()}
    files = sorted(old_ids)
    # 3 added, 2 removed, 1 changed, 1 touched (same bytes, new time), 1 moved (renamed)
    for i in range(20, 23):
        shutil.copy(sources[i], folder / f"new{i}.png")
    os.remove(files[0])
    os.remove(files[1])
    Image.fromarray(synthetic_image(99, 1, size=(60, 80))).save(files[2])
    os.utime(files[3], ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    os.rename(files[4], Path(files[4]).with_name("renamed.png"))
    report = sync_index(out)
    assert (report.added, report.removed, report.changed, report.moved, report.touched) == (3, 2, 1, 1, 1)
    assert report.embedded == 4  # the 3 new files and the changed one; the moved file kept its vector
    assert report.unchanged == 20 - 2 - 1 - 1 - 1 and report.gallery_size == 20 + 3 - 2
    after = Searcher.load(out)
    paths = {r.path: r.id for r in after.index.records()}
    assert files[0] not in paths and files[1] not in paths
    assert all(str((folder / f"new{i}.png").resolve()) in paths for i in range(20, 23))
    assert paths[files[2]] not in old_ids.values()  # re-embedded under a new id; ids are never reused
    moved = str(Path(files[4]).with_name("renamed.png"))
    np.testing.assert_array_equal(after.index.vectors_of([paths[moved]]), before.index.vectors_of([old_ids[files[4]]]))
    hits = after.query(str(folder / "new21.png"), k=1)
    assert hits[0].path == str((folder / "new21.png").resolve()) and hits[0].score > 0.999
    again = sync_index(out)
    assert again.embedded == 0 and not again.changed_anything and again.unchanged == report.gallery_size


def test_sync_recalibrates_only_when_over_a_tenth_of_the_gallery_changed(model, tmp_path):
    from simlib.search.calibrate import calibrate_threshold

    folder = tmp_path / "photos"
    sources = product_like_sources(tmp_path / "src", 40)
    for i, src in enumerate(sources[:30]):
        (folder / "all").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / "all" / f"p{i}.png")
    out = tmp_path / "index"
    index_folder(model, folder, out, batch_size=8, progress=False)
    searcher = Searcher.load(out)
    searcher.set_threshold(calibrate_threshold(searcher, seed=0))
    searcher.save_updated(out)
    shutil.copy(sources[30], folder / "all" / "p30.png")
    shutil.copy(sources[31], folder / "all" / "p31.png")
    small = sync_index(out)  # 2 of 32: under 10 %
    assert small.added == 2 and not small.recalibrated
    for i in range(32, 35):
        shutil.copy(sources[i], folder / "all" / f"p{i}.png")
    large = sync_index(out)  # 2 + 3 = 5 of 35 since the last calibration: over 10 %
    assert large.added == 3 and large.recalibrated
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["photos_changes_since_calibration"] == 0 and manifest["threshold"]["n_queries"] >= 5


def test_the_file_table_survives_names_that_are_not_utf8(model, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.png")
    Image.fromarray(synthetic_image(1, 0)).save(folder / name)
    Image.fromarray(synthetic_image(2, 0)).save(folder / "plain.png")
    out = tmp_path / "index"
    index_folder(model, folder, out, progress=False)
    assert str((folder / name).resolve()) in FolderState.load(work_dir(out)).files
    assert sync_index(out).unchanged == 2


def test_the_watcher_picks_up_a_new_file_within_seconds(model, tmp_path):
    from simlib.photos.watch import FolderWatcher

    folder = tmp_path / "photos"
    folder.mkdir()
    sources = product_like_sources(tmp_path / "src", 6)
    for s in sources[:5]:
        shutil.copy(s, folder)
    out = tmp_path / "index"
    index_folder(model, folder, out, progress=False)
    searcher = Searcher.load(out)
    watcher = FolderWatcher(searcher, out, settle=0.3).start()
    try:
        shutil.copy(sources[5], folder / "late.png")
        deadline = time.monotonic() + 30
        while not watcher.reports and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watcher.stop()
    assert watcher.reports and watcher.reports[0].added == 1
    assert searcher.ids_of_path(folder / "late.png") and len(Searcher.load(out).index) == 6


# ----------------------------------------------------------------------------- the commands
def test_simlib_index_lists_skipped_and_ignored_entries_then_syncs_on_a_second_run(messy, model_dir, tmp_path):
    out = tmp_path / "index"
    res = run_cli("index", "--data", messy.root, "--out", out, "--model", model_dir, "--quiet")
    assert res.returncode == 3, res.stderr  # done, with unreadable images
    n = len(messy.images)
    ignored = ("hidden", "not an image file name", "symlink loop", "another link")
    n_bad = sum(what not in ignored for what in messy.hostile.values())  # empty, truncated, text, broken link
    assert n_bad == 4 and res.stdout.splitlines()[-1] == f"done: {n} indexed, {n_bad} skipped", res.stdout
    for path, what in messy.hostile.items():
        kind = "ignored" if what in ignored else "skipped"
        assert f"{kind} {path}: " in res.stderr, (path, res.stderr)
    again = run_cli("index", "--data", messy.root, "--out", out, "--model", model_dir, "--quiet")
    assert "syncing" in again.stderr and f"0 embedded, {n_bad} skipped; the gallery holds {n}" in again.stdout
    res = run_cli("sync", "--index", out, "--json", "--quiet")
    body = json.loads(res.stdout)
    assert body["embedded"] == 0 and body["unchanged"] == n and body["gallery_size"] == n


def test_simlib_duplicates_groups_planted_copies_and_moves_only_when_asked(model_dir, tmp_path):
    folder = tmp_path / "photos"
    sources = product_like_sources(tmp_path / "src", 30, seed=5)
    messy = make_messy_folder(folder, sources, seed=2, side=(200, 260), kinds=("jpeg",), hostile=False)
    out = tmp_path / "index"
    assert run_cli("index", "--data", folder, "--out", out, "--model", model_dir, "--quiet").returncode == 0
    res = run_cli("duplicates", "--index", out, "--json", "--sheet", tmp_path / "sheet.png")
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert body["calibration"]["supported"], body["calibration"]
    found = {frozenset([g["keep"]["path"], *(m["path"] for m in g["others"])]) for g in body["groups"]}
    real = {str(Path(p).resolve()): messy.copy_kind.get(p, "original") for p in messy.images}
    planted = {frozenset(str(Path(p).resolve()) for p in g) for g in messy.groups}
    planted_pairs = {frozenset((a, b)) for g in planted for a in g for b in g if a < b}
    found_pairs = {frozenset((a, b)) for g in found for a in g for b in g if a < b}
    assert found_pairs <= planted_pairs  # precision 1: no two different images grouped
    uncropped = {p for p in planted_pairs if all(real[x] != "cropped" for x in p)}
    assert uncropped and uncropped <= found_pairs  # every resized, re-encoded and exact copy found
    for g in body["groups"]:  # the keep has the most pixels
        assert g["keep"]["width"] * g["keep"]["height"] >= max(m["width"] * m["height"] for m in g["others"])
    assert Image.open(tmp_path / "sheet.png").size[1] == len(found) * (128 + 30)
    assert all(Path(p).exists() for g in planted for p in g)  # nothing moved or deleted unasked
    moved_to = tmp_path / "aside"
    res = run_cli("duplicates", "--index", out, "--move-to", moved_to)
    assert res.returncode == 0, res.stderr
    n_others = sum(len(g) - 1 for g in found)
    assert res.stderr.count("moved ") == n_others and len(list(moved_to.rglob("*.jpg"))) == n_others
    assert f"{n_others} removed" in res.stdout
    assert run_cli("duplicates", "--index", out, "--json").stdout.count('"keep"') == 0


def test_duplicates_refuses_when_the_model_cannot_tell_copies_from_look_alikes(model_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    base = synthetic_image(3, 0, size=(60, 80)).astype(np.int16)
    for i in range(30):  # thirty different images that differ only in faint noise: look-alikes, not copies
        noise = np.random.default_rng(i).integers(-2, 3, base.shape)
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"p{i}.png")
    out = tmp_path / "index"
    assert run_cli("index", "--data", folder, "--out", out, "--model", model_dir, "--quiet").returncode == 0
    res = run_cli("duplicates", "--index", out)
    assert res.returncode == 1 and "cannot tell near-copies from different images" in res.stderr, res.stderr
    forced = run_cli("duplicates", "--index", out, "--force", "--json")
    assert forced.returncode == 0 and json.loads(forced.stdout)["calibration"]["supported"] is False


def test_an_index_built_without_a_file_table_syncs_given_its_folder(model, tmp_path):
    from simlib.data import load_image_folder

    folder = tmp_path / "photos"
    folder.mkdir()
    sources = product_like_sources(tmp_path / "src", 8)
    for s in sources[:7]:
        shutil.copy(s, folder)
    out = tmp_path / "index"
    searcher, _ = Searcher.from_table(model, load_image_folder(folder), progress=False)
    searcher.save(out)
    with pytest.raises(SimlibError, match="--data"):
        sync_index(out)  # no file table: the folder must be named once
    first = sync_index(out, folder)
    assert first.unchanged == 7 and first.embedded == 0 and not first.changed_anything
    shutil.copy(sources[7], folder / "late.png")
    later = sync_index(out)  # the folder is recorded now
    assert later.added == 1 and later.embedded == 1 and later.gallery_size == 8


def test_fingerprints_are_the_apps_thumbnails_cached_as_float16_and_an_old_cache_is_ignored(tmp_path):
    from simlib.photos.duplicates import Fingerprints
    from simlib.search.copies import THUMB_DIM, thumbnail

    class Index:  # the two calls Fingerprints makes
        def record(self, i):
            return type("R", (), {"path": str(paths[i]) if i < len(paths) else None})

        def __contains__(self, i):
            return True

    paths = product_like_sources(tmp_path / "src", 2)
    np.savez(tmp_path / Fingerprints.FILE, ids=np.arange(2), vectors=np.ones((2, 768)))  # the 16x16 fingerprints
    prints = Fingerprints(Index(), tmp_path)
    assert prints.cache == {}
    got = prints.of([0, 1, 5])  # 5: no file, a zero fingerprint
    np.testing.assert_allclose(got[0], thumbnail(paths[0]), atol=1e-3)
    assert got.shape == (3, THUMB_DIM) and not got[2].any()
    prints.save()
    np.testing.assert_array_equal(Fingerprints(Index(), tmp_path).of([0, 1, 5]), got)  # read back exactly
    # a product photo (60x80 JPEG) is under the reduced-decode size: the same thumbnail as from a full decode
    Image.open(paths[0]).convert("RGB").save(tmp_path / "p.jpg", quality=90)
    full = np.asarray(Image.open(tmp_path / "p.jpg").convert("RGB").resize((32, 32), Image.Resampling.BOX), np.float32)
    full = full.ravel() - full.mean()
    np.testing.assert_array_equal(thumbnail(tmp_path / "p.jpg"), full / np.linalg.norm(full))
