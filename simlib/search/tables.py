"""Between tables and indexes: the records a table's rows become, and the table an index holds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simlib.data import ImageTable
from simlib.errors import SimlibError
from simlib.index import IndexBackend, Record


def table_records(table: ImageTable, rows: Sequence[int] | np.ndarray) -> list[Record]:
    """Index records for the given table rows."""
    return [
        Record(
            id=int(table.ids[r]),
            path=None if table.paths is None else str(Path(table.paths[r]).resolve()),
            label=table.label(r),
            attributes=table.attrs(r),
        )
        for r in rows
    ]


def index_table(index: IndexBackend, *, skip_pathless: bool = False, labelled_only: bool = False) -> ImageTable:
    """The images an index holds, as a table: to re-index the same gallery, to calibrate or to train on it.

    Ids, paths and attributes are the records'; labels only when every record kept has one (a partly
    labelled table would treat the unlabelled images as one more class).

    Args:
        index: the index.
        skip_pathless: leave out records without an image file (calibration samples what it can
            read) instead of refusing them (re-indexing must not silently drop gallery images).
        labelled_only: keep only the records with an image file and a label (training on the gallery:
            images added in the app may have no label).
    """
    records = index.records()
    if skip_pathless or labelled_only:
        records = [r for r in records if r.path is not None and (bool(r.label) or not labelled_only)]
    if not records or any(r.path is None for r in records):
        raise SimlibError("this index does not record its image files: give the gallery with --data DIR")
    labels = [r.label for r in records]
    return ImageTable(
        ids=np.asarray([r.id for r in records], np.int64),
        paths=tuple(str(r.path) for r in records),
        labels=None if any(lab is None for lab in labels) else np.asarray(labels, dtype=object),
        attributes=tuple(dict(r.attributes) for r in records),
        name=index.manifest.data or "indexed gallery",
    )
