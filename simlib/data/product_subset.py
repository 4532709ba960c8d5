"""Rebuild the course's product subset (``fashion-product-images-small/``) from a Kaggle download.

The course, the README and the benchmarks measure on 4,888 images of Kaggle's "Fashion Product
Images (Small)" (47 ``articleType`` classes, 50-120 images each). The ids of those images ship with
simlib (``simlib/resources/product_subset_ids.txt``); :func:`rebuild_product_subset` copies them, and
their ``styles.csv`` rows, out of the full download into the same layout, so a learner gets the very
images the course's figures were measured on.
"""

from __future__ import annotations

import csv
import os
import shutil
from importlib import resources
from pathlib import Path

from simlib.errors import SimlibError

STYLES_COLUMNS = [
    "id",
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
    "productDisplayName",
]


def subset_ids(path: str | os.PathLike | None = None) -> list[str]:
    """The product ids of the subset (the shipped list, or one id per line of ``path``; ``#`` comments)."""
    text = (
        Path(path).read_text(encoding="utf-8")
        if path is not None
        else resources.files("simlib").joinpath("resources/product_subset_ids.txt").read_text(encoding="utf-8")
    )
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def find_download(kaggle_dir: str | os.PathLike) -> Path:
    """The folder holding ``styles.csv`` and ``images/`` in a Kaggle download (the zip nests a copy in
    ``myntradataset/``; either is fine)."""
    root = Path(kaggle_dir)
    for candidate in (root, root / "myntradataset", root / "fashion-product-images-small"):
        if (candidate / "styles.csv").is_file() and (candidate / "images").is_dir():
            return candidate
    raise SimlibError(f"{root} is not a Kaggle 'Fashion Product Images (Small)' download: no styles.csv + images/")


def read_kaggle_styles(path: Path) -> dict[str, list[str]]:
    """``styles.csv`` rows by id. Kaggle's file has product names with unquoted commas, so the first nine
    fields are split off and the rest of the line is the name."""
    rows: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        header = f.readline().strip().split(",")
        if header[: len(STYLES_COLUMNS)] != STYLES_COLUMNS:
            raise SimlibError(f"{path} does not have the columns {','.join(STYLES_COLUMNS)}")
        for line in f:
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split(",", len(STYLES_COLUMNS) - 1)
            if len(fields) < len(STYLES_COLUMNS):
                continue  # a truncated line: the id cannot be used
            name = fields[-1]
            if name.startswith('"') and name.endswith('"') and len(name) > 1:
                name = next(csv.reader([name]))[0]  # a properly quoted name
            rows[fields[0]] = [*fields[:-1], name]
    return rows


def rebuild_product_subset(
    kaggle_dir: str | os.PathLike, out: str | os.PathLike, ids: str | os.PathLike | None = None
) -> dict[str, int]:
    """Copy the subset's images and ``styles.csv`` rows from a Kaggle download into ``out``.

    Args:
        kaggle_dir: the unzipped Kaggle download (``styles.csv`` + ``images/``).
        out: the folder to write (``out/images/<id>.jpg`` + ``out/styles.csv``); must be empty or absent.
        ids: a file of ids to use instead of the shipped list.

    Returns:
        ``{"images": n, "classes": c}``.

    Raises:
        SimlibError: not a download, ``out`` not empty, or ids missing from the download.
    """
    src = find_download(kaggle_dir)
    dst = Path(out)
    if dst.exists() and any(dst.iterdir()):
        raise SimlibError(f"{dst} is not empty: give a new folder")
    wanted = subset_ids(ids)
    styles = read_kaggle_styles(src / "styles.csv")
    missing = [i for i in wanted if i not in styles or not (src / "images" / f"{i}.jpg").is_file()]
    if missing:
        raise SimlibError(
            f"{len(missing)} of the {len(wanted)} subset ids are missing from {src} (e.g. {missing[0]}): "
            "is it the 'small' set, fully unzipped?"
        )
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    with (tmp / "styles.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(STYLES_COLUMNS)
        for i in wanted:
            writer.writerow(styles[i])
            shutil.copyfile(src / "images" / f"{i}.jpg", tmp / "images" / f"{i}.jpg")
    if dst.exists():
        dst.rmdir()
    tmp.rename(dst)  # the folder appears whole or not at all
    return {"images": len(wanted), "classes": len({styles[i][4] for i in wanted})}
