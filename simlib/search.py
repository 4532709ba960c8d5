"""Query images against an index: the model and the index that belong together.

An index folder written by :meth:`Searcher.save` holds the FAISS index, its records and
manifest, and the model that embedded it (``model/``), so it is self-contained. Pairing an
index with a different model is refused: the embeddings would not be comparable.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simlib.config import IndexConfig, to_dict
from simlib.data import ImageTable
from simlib.embed import EmbedResult, embed_images, embed_table
from simlib.errors import SimlibError
from simlib.index import Filters, Record, VectorIndex
from simlib.model import load_model, model_config, model_fingerprint, save_model

MODEL_SUBDIR = "model"


@dataclasses.dataclass(frozen=True)
class Hit:
    """One search result, best first (rank 1)."""

    rank: int
    id: int
    score: float
    path: str | None
    label: str | None
    attributes: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """The hit as a JSON-ready dict."""
        return dataclasses.asdict(self)


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


class Searcher:
    """A model and the index it built: ``Searcher(model, index).query(image, k)``."""

    def __init__(self, model, index: VectorIndex, check: bool = True) -> None:
        if index.dim != model_config(model).embedding_dim:
            raise SimlibError(
                f"this index holds {index.dim}-d vectors but the model makes "
                f"{model_config(model).embedding_dim}-d ones: rebuild the index with this model"
            )
        built_by = index.manifest.get("model_fingerprint")
        if check and built_by and built_by != model_fingerprint(model):
            raise SimlibError(
                "this index was built by a different model (fingerprint "
                f"{built_by} vs {model_fingerprint(model)}): rebuild it with `simlib index --model ...`"
            )
        self.model = model
        self.index = index

    # ------------------------------------------------------------------ building and saving
    @classmethod
    def from_table(
        cls,
        model,
        table: ImageTable,
        config: IndexConfig | None = None,
        progress: bool | str = True,
        batch_size: int = 32,
    ) -> tuple[Searcher, EmbedResult]:
        """Embed every image of ``table`` and index it; returns the searcher and the embedding result
        (whose ``skipped`` lists images that could not be read)."""
        result = embed_table(model, table, batch_size=batch_size, progress=progress)
        if len(result.rows) == 0:
            raise SimlibError(
                f"none of the {len(table)} images could be read; first error: "
                + next(iter(result.skipped.values()), "none")
            )
        index = VectorIndex.build(result.embeddings, table_records(table, result.rows), config)
        index.manifest.update(model_fingerprint=model_fingerprint(model), data=table.name)
        return cls(model, index, check=False), result

    def save(self, directory: str | os.PathLike) -> Path:
        """Write index and model into one folder, atomically."""
        extra = {
            "model_fingerprint": model_fingerprint(self.model),
            "model_config": to_dict(model_config(self.model)),
            "model_dir": MODEL_SUBDIR,
        }
        return self.index.save(directory, extra, write_extra=lambda tmp: save_model(self.model, tmp / MODEL_SUBDIR))

    @classmethod
    def load(cls, index_dir: str | os.PathLike, model_dir: str | os.PathLike | None = None) -> Searcher:
        """Open an index folder with its own model, or with ``model_dir`` (checked to be the same model)."""
        index_dir = Path(index_dir)
        index = VectorIndex.load(index_dir)
        model = load_model(Path(model_dir) if model_dir else index_dir / index.manifest.get("model_dir", MODEL_SUBDIR))
        return cls(model, index)

    # ------------------------------------------------------------------ querying
    def query(
        self,
        image: Any,
        k: int = 5,
        filters: Filters | None = None,
        exclude_self: bool = False,
        exclude_ids: Sequence[int] = (),
    ) -> list[Hit]:
        """The ``k`` most similar gallery images to ``image``.

        Args:
            image: a path, bytes, PIL image or numpy array.
            k: number of results.
            filters: attribute (or "label") -> value(s); applied inside the search.
            exclude_self: when ``image`` is a path inside the gallery, leave that entry out.
            exclude_ids: ids to leave out.
        """
        exclude = set(int(i) for i in exclude_ids)
        vector = embed_images(self.model, [image])[0]  # first: a bad file fails here with a clear SimlibError
        if exclude_self and isinstance(image, str | os.PathLike):
            resolved = str(Path(image).resolve())
            exclude |= {r.id for r in self._records_by_path().get(resolved, [])}
        return self.query_vector(vector, k, filters, exclude)

    def query_vector(
        self, vector: np.ndarray, k: int = 5, filters: Filters | None = None, exclude_ids: Sequence[int] | set = ()
    ) -> list[Hit]:
        """Like :meth:`query` for an embedding already computed."""
        exclude = set(int(i) for i in exclude_ids)
        scores, ids = self.index.search(vector[None, :], k + len(exclude), filters)
        hits = []
        for s, i in zip(scores[0], ids[0], strict=True):
            if i < 0 or int(i) in exclude:
                continue
            r = self.index.record(int(i))
            hits.append(Hit(len(hits) + 1, r.id, float(s), r.path, r.label, r.attributes))
            if len(hits) == k:
                break
        return hits

    def timed_query(self, image: Any, k: int = 5, filters: Filters | None = None) -> tuple[list[Hit], float]:
        """:meth:`query` plus its wall time in seconds."""
        t0 = time.perf_counter()
        hits = self.query(image, k, filters)
        return hits, time.perf_counter() - t0

    def _records_by_path(self) -> dict[str, list[Record]]:
        cached = getattr(self, "_by_path", None)
        if cached is None or cached[0] != len(self.index):
            by_path: dict[str, list[Record]] = {}
            for r in self.index.records():
                if r.path:
                    by_path.setdefault(r.path, []).append(r)
            self._by_path = cached = (len(self.index), by_path)
        return cached[1]

    def describe(self) -> dict[str, Any]:
        """Gallery size, index kind, model settings: what a status line shows."""
        cfg = model_config(self.model)
        return {
            "gallery_size": len(self.index),
            "index_kind": self.index.kind,
            "image_size": cfg.image_size,
            "embedding_dim": cfg.embedding_dim,
            "weights": cfg.weights,
            "trained": cfg.trained,
            "model_fingerprint": model_fingerprint(self.model),
        }
