"""One index interface, two backends: FAISS in-process (default) and Milvus (Lite or a server).

:class:`IndexBackend` is what :class:`simlib.search.Searcher`, the CLI and the app use;
:func:`open_index` reopens any index folder by the backend its manifest names, and
:func:`create_index` makes an empty one to stream a gallery into.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from simlib.config import IndexConfig
from simlib.errors import SimlibError
from simlib.index import MANIFEST_FILE, Filters, Record
from simlib.storage import load_json, recover_dir

BACKENDS = ("faiss", "milvus")


@runtime_checkable
class IndexBackend(Protocol):
    """Cosine top-K search over unit vectors with ids, records and attribute filters.

    Attributes:
        backend: "faiss" or "milvus".
        dim: vector dimension.
        kind: the resolved index kind ("flat", "hnsw", "ivfpq").
        config: the :class:`IndexConfig` it was built with.
        manifest: what ``manifest.json`` says (model fingerprint, counts, versions, ...).
    """

    backend: str
    dim: int
    kind: str
    config: IndexConfig
    manifest: dict[str, Any]

    def add(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        """Add vectors (normalised by the backend) with one record each; ids must be new."""

    def remove(self, ids: Sequence[int]) -> int:
        """Remove ids (unknown ones ignored); returns how many were removed."""

    def search(self, queries: np.ndarray, k: int, filters: Filters | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, both (q, k), best first, padded with ``-inf`` / ``-1``."""

    def __len__(self) -> int: ...

    def __contains__(self, id_: int) -> bool: ...

    def record(self, id_: int) -> Record:
        """The record stored for ``id_`` (SimlibError when absent)."""

    def records(self) -> list[Record]:
        """Every record."""

    @property
    def ids(self) -> np.ndarray:
        """Ids of the stored vectors."""

    def vectors_of(self, ids: Sequence[int]) -> np.ndarray:
        """The stored unit vectors of ``ids``, in that order."""

    def attribute_values(self, max_values: int = 200) -> dict[str, list[str]]:
        """Distinct values per attribute (and "label") for filter menus."""

    def save(
        self,
        directory: str | os.PathLike,
        extra: dict[str, Any] | None = None,
        write_extra: Callable[[Path], None] | None = None,
    ) -> Path:
        """Persist and write the index folder (manifest + backend files) atomically."""

    def close(self) -> None:
        """Release connections and files."""


def manifest_backend(directory: str | os.PathLike) -> str:
    """The backend named by an index folder's manifest ("faiss" for folders written before backends)."""
    directory = Path(directory)
    recover_dir(directory)
    if not directory.is_dir():
        raise SimlibError(f"index folder {directory} does not exist: build one with `simlib index`")
    return str(load_json(directory / MANIFEST_FILE).get("backend", "faiss"))


def open_index(directory: str | os.PathLike, uri: str | None = None, mmap: bool = False) -> IndexBackend:
    """Reopen an index folder with the backend its manifest names.

    Args:
        directory: folder written by ``Searcher.save`` / ``index.save`` (or its ``manifest.json``).
        uri: Milvus only: reach the collection at this address instead of the manifest's.
        mmap: FAISS only: memory-map the vectors (see :meth:`simlib.index.VectorIndex.load`).
    """
    directory = Path(directory)
    if directory.name == MANIFEST_FILE:
        directory = directory.parent
    backend = manifest_backend(directory)
    if backend == "faiss":
        if uri:
            raise SimlibError(f"{directory} is a FAISS index: --uri applies to Milvus indexes only")
        from simlib.index import VectorIndex

        return VectorIndex.load(directory, mmap=mmap)
    if mmap:
        raise SimlibError(f"{directory} is a {backend} index: memory-mapping (--mmap) applies to FAISS indexes only")
    if backend == "milvus":
        from simlib.milvus import MilvusIndex

        return MilvusIndex.open(directory, uri=uri)
    raise SimlibError(f"{directory} uses backend {backend!r}, which this simlib does not know: upgrade simlib")


def create_index(
    backend: str,
    dim: int,
    config: IndexConfig | None = None,
    *,
    attributes: Sequence[str] = (),
    uri: str | None = None,
    collection: str | None = None,
    expected_count: int = 0,
) -> IndexBackend:
    """An empty index to :meth:`~IndexBackend.add` to in chunks.

    Args:
        backend: "faiss" or "milvus".
        dim: vector dimension.
        config: index kind and parameters; ``auto`` is resolved from ``expected_count``.
        attributes: Milvus: attribute names that become filterable fields.
        uri: Milvus: a ``.db`` path (Milvus Lite) or ``http://host:19530``.
        collection: Milvus: collection name.
        expected_count: the gallery size, to resolve ``auto``.
    """
    config = config or IndexConfig()
    if backend == "faiss":
        from simlib.index import VectorIndex, _new_faiss_index, resolve_kind

        kind = resolve_kind(config.kind, expected_count)
        if kind == "ivfpq":
            raise SimlibError("an IVF-PQ index is trained on the whole gallery: build it with VectorIndex.build")
        return VectorIndex(dim, config, kind, _new_faiss_index(dim, kind, config, None))
    if backend == "milvus":
        from simlib.milvus import DEFAULT_COLLECTION, MilvusIndex

        if not uri:
            raise SimlibError("the Milvus backend needs --uri: a path ending in .db (Milvus Lite) or http://host:19530")
        return MilvusIndex.create(
            uri, dim, attributes, config, collection=collection or DEFAULT_COLLECTION, expected_count=expected_count
        )
    raise SimlibError(f"unknown backend {backend!r}: use {' or '.join(BACKENDS)}")


def close_index(index: Any) -> None:
    """Close an index if its backend holds connections or files (FAISS holds none)."""
    close = getattr(index, "close", None)
    if callable(close):
        close()
