"""`simlib product-subset` rebuilds the course's product folder from a Kaggle download of the full set."""

from __future__ import annotations

import csv
import shutil

import pytest

from tests.support.cli import run_cli

pytestmark = pytest.mark.integration  # reads a few real images from the shared data


def test_the_shipped_id_list_is_the_shared_product_set(data_root):
    from simlib.data.product_subset import subset_ids

    ids = subset_ids()
    with (data_root / "fashion-product-images-small" / "styles.csv").open(encoding="utf-8", newline="") as f:
        shared = [row["id"] for row in csv.DictReader(f)]
    assert ids == shared and len(ids) == 4888


def fake_download(data_root, root, keep: list[str], extra: int = 3):
    """A 'full' Kaggle download: some real subset images plus images outside the subset, in Kaggle's
    styles.csv dialect (one name with unquoted commas), nested in myntradataset/ as the zip has it."""
    src = data_root / "fashion-product-images-small"
    with (src / "styles.csv").open(encoding="utf-8", newline="") as f:
        rows = {row["id"]: row for row in csv.DictReader(f)}
    dl = root / "myntradataset"
    (dl / "images").mkdir(parents=True)
    lines = ["id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"]
    others = [i for i in rows if i not in keep][:extra]
    for n, i in enumerate(keep + others):
        r = dict(rows[i])
        if n == 0:
            r["productDisplayName"] = "Brand, Model, Colour"  # Kaggle leaves these commas unquoted
        lines.append(",".join(r.values()))
        shutil.copyfile(src / "images" / f"{i}.jpg", dl / "images" / f"{i}.jpg")
    (dl / "styles.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


def test_rebuild_copies_exactly_the_listed_images_and_rows(data_root, tmp_path):
    keep = ["1540", "1562", "7491", "10097"]
    rows = fake_download(data_root, tmp_path / "kaggle", keep)
    (tmp_path / "ids.txt").write_text("# two comment lines\n#\n" + "\n".join(keep) + "\n")
    out = tmp_path / "fashion-product-images-small"

    result = run_cli("product-subset", "--kaggle", tmp_path / "kaggle", "--out", out, "--ids", tmp_path / "ids.txt")
    assert result.returncode == 0, result.stderr
    assert "wrote 4 images" in result.stdout
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(keep)
    src = data_root / "fashion-product-images-small" / "images"
    assert all((out / "images" / f"{i}.jpg").read_bytes() == (src / f"{i}.jpg").read_bytes() for i in keep)
    with (out / "styles.csv").open(encoding="utf-8", newline="") as f:
        got = list(csv.DictReader(f))
    assert [r["id"] for r in got] == keep
    assert got[0]["productDisplayName"] == "Brand, Model, Colour"  # the unquoted commas stay in the name
    assert got[2] == rows["7491"]  # a quoted name with quotes inside survives as in the original
    assert not (tmp_path / "fashion-product-images-small.partial").exists()

    from simlib.data import load_dataset

    table = load_dataset(out)  # the course's loader reads the rebuilt folder
    assert len(table) == 4 and set(table.labels) == {rows[i]["articleType"] for i in keep}


def test_rebuild_refuses_an_incomplete_download_and_a_used_folder(data_root, tmp_path):
    fake_download(data_root, tmp_path / "kaggle", ["1540"])  # 4 of the subset (3 "others" are in it too)
    result = run_cli("product-subset", "--kaggle", tmp_path / "kaggle", "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "4884 of the 4888 subset ids are missing" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()

    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    result = run_cli("product-subset", "--kaggle", tmp_path / "kaggle", "--out", used)
    assert result.returncode == 1 and "not empty" in result.stderr

    result = run_cli("product-subset", "--kaggle", tmp_path, "--out", tmp_path / "o2")  # no styles.csv there
    assert result.returncode == 1 and "not a Kaggle" in result.stderr
