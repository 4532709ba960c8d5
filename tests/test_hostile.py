"""The hostile corpus (tests/hostile.py) through every library and command-line entry point.

``pytest -m hostile`` runs these: good images are indexed and answer queries; every bad one is
skipped and listed with its reason when indexing, and refused with one clear error as a query,
quickly and without decoding bombs.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hostile import Hostile, png_declaring, upright_and_rotated, write_corpus

from simlib.errors import SimlibError
from tests.support import REPO
from tests.support.cli import run_cli

pytestmark = pytest.mark.hostile

QUERY_SECONDS = 5.0  # generous on a loaded 2-core machine; a hang would take forever
MODEL_ARGS = ("--weights", "none", "--image-size", "32", "--embedding-dim", "32")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Hostile]:
    return write_corpus(tmp_path_factory.mktemp("hostile") / "gallery", seed=0)


def _root(corpus: list[Hostile]) -> Path:
    return corpus[0].path.parent


def _by(corpus: list[Hostile], expected: str) -> list[Hostile]:
    return [e for e in corpus if e.expected == expected]


def _sources(e: Hostile) -> list:
    """The ways a user can hand over the entry: path string, Path and, for small files, bytes."""
    small = e.path.is_file() and os.access(e.path, os.R_OK) and e.path.stat().st_size < 2**20
    return [str(e.path), e.path] + ([e.path.read_bytes()] if small else [])


def test_corpus_has_every_kind(corpus):
    kinds = {e.kind for e in corpus}
    assert len(kinds) >= 30
    assert len(_by(corpus, "good")) >= 15 and len(_by(corpus, "bad")) >= 10
    if os.geteuid() == 0:
        assert not any("permission" in k for k in kinds), "as root a mode-000 file is readable: not in the corpus"
    else:
        assert any("permission" in k for k in kinds)


# ----------------------------------------------------------------------------- decoding
def test_open_and_prepare_every_entry(corpus):
    from simlib.data import prepare_image

    for e in corpus:
        t0 = time.perf_counter()
        for source in _sources(e):
            if e.expected == "good":
                out = prepare_image(source, 32)
                assert out.shape == (32, 32, 3) and out.dtype == np.uint8, e.kind
            else:
                with pytest.raises(SimlibError) as info:
                    prepare_image(source, 32)
                message = str(info.value)
                assert "\n" not in message and (isinstance(source, bytes) or str(e.path) in message), e.kind
        assert time.perf_counter() - t0 < QUERY_SECONDS, e.kind


def test_exif_rotated_jpeg_decodes_upright():
    from PIL import Image

    from simlib.data import prepare_image

    upright, rotated_jpeg = upright_and_rotated()
    want = prepare_image(upright, 32).astype(int)
    got = prepare_image(rotated_jpeg, 32).astype(int)
    # the stored pixels without their EXIF tag: what a decoder ignoring orientation would show
    sideways = prepare_image(np.asarray(Image.open(io.BytesIO(rotated_jpeg)).convert("RGB")), 32).astype(int)
    assert np.abs(got - want).mean() < 6  # JPEG noise only
    assert np.abs(sideways - want).mean() > 30  # ignoring EXIF would be caught


# Runs a `python -c CODE ...` or `python -m MODULE ...` command line and, at exit, writes the
# process's own peak RSS (VmHWM of its post-exec address space) to a file. getrusage/wait4 cannot be
# used: Linux carries the parent's peak across fork and exec into the child's ru_maxrss, so a child
# of a pytest process holding TensorFlow would report gigabytes it never used.
_HWM_WRAPPER = """
import atexit, runpy, sys
out, mode, target, *rest = sys.argv[1:]
def _hwm():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    open(out, "w").write(line.split()[1])
atexit.register(_hwm)
if mode == "-c":
    sys.argv = ["-c", *rest]
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def _peak_rss_mb(args: list[str], cwd: Path = REPO) -> tuple[int, float, str]:
    """Run ``python -c|-m ...``; return (exit code, peak RSS of that process in MB, stderr)."""
    assert args[0] == sys.executable and args[1] in ("-c", "-m")
    with tempfile.NamedTemporaryFile(suffix=".hwm") as hwm:
        p = subprocess.run(
            [sys.executable, "-c", _HWM_WRAPPER, hwm.name, *args[1:]],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=300,
        )
        kb = Path(hwm.name).read_text().strip()
    return p.returncode, int(kb) / 1024, p.stderr.decode(errors="replace")


def test_bomb_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(8000, 8000))  # 190 kB on disk, 192 MB decoded
    decode = "from PIL import Image; import sys; Image.open(sys.argv[1]).load()"
    rc, control_mb, _ = _peak_rss_mb([sys.executable, "-c", decode, str(bomb)])
    assert rc == 0 and control_mb > 200, "the control decode must show what a bomb costs"
    rc, cli_mb, err = _peak_rss_mb([sys.executable, "-m", "simlib", "search", str(bomb), "--index", str(tmp_path)])
    assert rc == 1 and "pixel limit" in err and "Traceback" not in err
    prep = "import sys\nfrom simlib.data import prepare_image as p\ntry: p(sys.argv[1], 32)\nexcept Exception: pass"
    _, lib_mb, _ = _peak_rss_mb([sys.executable, "-c", prep, str(bomb)])
    assert cli_mb < control_mb / 2 and lib_mb < control_mb / 2, (cli_mb, lib_mb, control_mb)


# ----------------------------------------------------------------------------- indexing
@pytest.fixture(scope="module")
def indexed(corpus, tiny_model):
    """``Searcher.from_table`` over the corpus folder: (table, searcher, embed result)."""
    from simlib.data import load_image_folder
    from simlib.search import Searcher

    table = load_image_folder(_root(corpus))
    searcher, result = Searcher.from_table(tiny_model, table, progress=False)
    return table, searcher, result


def test_index_folder_with_the_library(corpus, indexed):
    from simlib.data import load_dataset

    table, searcher, result = indexed
    assert len(load_dataset(str(_root(corpus)))) == len(table)
    indexed_paths = {Path(table.source(r)) for r in result.rows}
    skipped = {Path(table.source(r)): reason for r, reason in result.skipped.items()}
    assert indexed_paths == {e.path for e in _by(corpus, "good")}
    assert set(skipped) == {e.path for e in _by(corpus, "bad")}
    for path, reason in skipped.items():
        assert reason and "Traceback" not in reason, path
    assert len(searcher.index) == len(indexed_paths)


def test_a_folder_of_only_bad_files_is_one_clear_error(tmp_path, tiny_model):
    from simlib.data import load_image_folder
    from simlib.search import Searcher

    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("text")
    os.symlink("gone.jpg", tmp_path / "dangling.jpg")
    with pytest.raises(SimlibError, match="none of the 3 images could be read"):
        Searcher.from_table(tiny_model, load_image_folder(tmp_path), progress=False)


@pytest.fixture(scope="module")
def corpus_index(corpus, tmp_path_factory) -> Path:
    """``simlib index`` over the corpus, as a user runs it; checks its output on the way."""
    out = tmp_path_factory.mktemp("hostile-index") / "index"
    t0 = time.perf_counter()
    proc = run_cli("index", "--data", str(_root(corpus)), "--out", str(out), "--quiet", *MODEL_ARGS)
    elapsed = time.perf_counter() - t0
    good, bad = _by(corpus, "good"), _by(corpus, "bad")
    assert proc.returncode == 3, proc.stderr[-2000:]  # done, with skipped images
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"done: {len(good)} indexed, {len(bad)} skipped"
    skipped_lines = [line for line in proc.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped_lines) == len(bad)
    for e in bad:
        assert sum(line.startswith(f"skipped {e.path}: ") for line in skipped_lines) == 1, e.kind
    print(f"simlib index over the hostile corpus: {elapsed:.1f} s")
    return out


@pytest.mark.timeout(300)  # corpus_index's setup: a FIFO must not hang the in-process index
def test_index_folder_with_the_cli(corpus_index, corpus):
    from simlib.index import VectorIndex

    index = VectorIndex.load(corpus_index)
    assert {r.path for r in index.records()} == {str(e.path.resolve()) for e in _by(corpus, "good")}


# ----------------------------------------------------------------------------- querying
def test_query_every_entry_with_the_library(corpus, indexed):
    _, searcher, _ = indexed
    n = len(searcher.index)
    for e in corpus:
        t0 = time.perf_counter()
        if e.expected == "good":
            hits = searcher.query(str(e.path), k=3, exclude_self=True)
            assert len(hits) == 3 and all(h.path != str(e.path.resolve()) for h in hits), e.kind
            for source in _sources(e):
                assert len(searcher.query(source, k=n)) == n, e.kind
        else:
            for source in _sources(e):
                for exclude_self in (False, True):
                    with pytest.raises(SimlibError):
                        searcher.query(source, k=3, exclude_self=exclude_self)
        assert time.perf_counter() - t0 < QUERY_SECONDS, e.kind


@pytest.mark.timeout(300)  # corpus_index's setup: a FIFO must not hang the in-process index
def test_query_every_entry_with_the_cli(corpus, corpus_index, capsys):
    from simlib.cli import main

    good = _by(corpus, "good")[0]
    proc = run_cli("search", str(good.path), "--index", str(corpus_index), "-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Every bad query: the CLI's main() in this process (a crash would raise here) ...
    bad = [e for e in corpus if e.expected != "good"]
    for e in bad:
        t0 = time.perf_counter()
        assert main(["search", str(e.path), "--index", str(corpus_index)]) == 1, e.kind
        assert time.perf_counter() - t0 < QUERY_SECONDS, e.kind
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith(f"simlib: error: {e.path}"), (e.kind, err)
    # ... and the worst ones as real processes, all at once, with a deadline (a FIFO must not hang)
    worst = {"fifo.jpg", "bomb_30000.png", "loop.jpg", "truncated.jpg", "folder.jpg"}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        (
            e,
            subprocess.Popen(
                [sys.executable, "-m", "simlib", "search", str(e.path), "--index", str(corpus_index)],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
        )
        for e in bad
        if e.path.name in worst
    ]
    assert len(procs) >= 4
    for e, p in procs:
        out, err = p.communicate(timeout=60)
        lines = err.decode("utf-8", errors="replace").strip().splitlines()
        assert p.returncode == 1 and out == b"", (e.kind, lines)
        assert len(lines) == 1 and lines[0].startswith("simlib: error: "), (e.kind, lines)
