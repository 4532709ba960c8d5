"""The explain, calibrate, add and remove commands and `search --collapse`, run through simlib.cli.main."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.support.cli import run_cli

pytestmark = pytest.mark.integration  # the small real index and its ResNet50


@pytest.fixture()
def index_copy(small_index_dir, tmp_path):
    return shutil.copytree(small_index_dir, tmp_path / "index")


def run(*args):
    res = run_cli(*args)
    return res.returncode, res.stdout, res.stderr


def test_search_collapse_and_no_good_match(index_copy, small_table, tmp_path):
    code, out, _ = run("search", small_table.paths[0], "--index", index_copy, "-k", "3", "--collapse", "0.9999")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[-1] == "merged" and all(" +" in line for line in lines[1:4])
    assert lines[-1].startswith("merged ") and "cosine >= 0.9999" in lines[-1]

    code, out, _ = run("calibrate", "--index", index_copy, "--json", "--quiet")
    info = json.loads(out)
    assert code == 0 and json.loads((index_copy / "manifest.json").read_text())["threshold"] == info
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 60, 3)).astype(np.uint8)).save(noise)
    code, out, _ = run("search", noise, "--index", index_copy)
    if info["supported"]:
        assert code == 0 and out.startswith("no good match: the best score"), (info, out)
        assert all(line.endswith("low confidence") for line in out.splitlines()[3:])
    else:  # an untrained 32 px model rarely supports it: then it says so instead of calling everything weak
        assert code == 0 and out.splitlines()[-1].startswith("This model cannot tell good matches"), (info, out)
        assert not any(line.endswith("low confidence") for line in out.splitlines())


def test_explain_writes_a_figure(small_index_dir, small_table, tmp_path):
    out_png = tmp_path / "why.png"
    code, out, _ = run(
        "explain", small_table.paths[0], int(small_table.ids[3]), "--index", small_index_dir, "--out", out_png
    )
    assert code == 0 and "cosine similarity" in out
    assert Image.open(out_png).size[0] > 300


def test_add_and_remove(index_copy, product_table, small_table, tmp_path):
    new = [p for p in product_table.paths[:40] if p not in small_table.paths][:3]
    folder = tmp_path / "new"
    folder.mkdir()
    for p in new:
        shutil.copy(p, folder)
    code, out, _ = run("add", folder, "--index", index_copy, "--quiet")
    n = len(small_table)
    assert code == 0 and "added 3 images" in out and f"holds {n + 3}" in out
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    first = folder / sorted(p.name for p in folder.iterdir())[0]
    code, out, err = run("add", first, tmp_path / "broken.jpg", "--index", index_copy)
    assert code == 3 and "added 0" in out and "skipped 2" in out  # 3: done, but an image was unreadable
    assert "already in the index" in err and "broken.jpg" in err
    records = [json.loads(line) for line in (index_copy / "records.jsonl").read_text().splitlines()]
    added = [r for r in records if r["path"].startswith(str(folder))]
    assert len(added) == 3 and all(r["label"] is None for r in added)  # product-set labels do not come from folders
    code, out, err = run("remove", added[0]["id"], added[1]["path"], 123456789, "--index", index_copy)
    assert code == 0 and "removed 2" in out and "123456789" in err
    assert json.loads((index_copy / "manifest.json").read_text())["count"] == n + 1
    code, _, err = run("remove", 123456789, "--index", index_copy)
    assert code == 1 and "nothing removed" in err
