"""Open an index folder by the backend its manifest names, or create an empty index of a backend.

Backends are listed by name with a function returning the class that implements
:class:`~simlib.index.base.IndexBackend`: a backend's module (and its client library) is imported
only when an index of it is opened or created.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from simlib.config import IndexConfig
from simlib.errors import SimlibError
from simlib.index.base import IndexBackend
from simlib.index.manifest import index_folder, read_manifest


def _faiss() -> type[IndexBackend]:
    from simlib.index.faiss import VectorIndex

    return VectorIndex


def _milvus() -> type[IndexBackend]:
    from simlib.index.milvus import MilvusIndex

    return MilvusIndex


BACKENDS: dict[str, Callable[[], type[IndexBackend]]] = {"faiss": _faiss, "milvus": _milvus}


def backend_class(name: str) -> type[IndexBackend]:
    """The class implementing backend ``name``."""
    if name not in BACKENDS:
        raise SimlibError(f"unknown backend {name!r}: use {' or '.join(BACKENDS)}")
    return BACKENDS[name]()


def open_index(directory: str | os.PathLike, uri: str | None = None, mmap: bool = False) -> IndexBackend:
    """Reopen an index folder with the backend its manifest names.

    Args:
        directory: folder written by ``Searcher.save`` / ``index.save`` (or its ``manifest.json``).
        uri: Milvus only: reach the collection at this address instead of the manifest's.
        mmap: FAISS only: memory-map the vectors (see :meth:`simlib.index.VectorIndex.load`).
    """
    directory = index_folder(directory)
    manifest = read_manifest(directory)
    if manifest.backend not in BACKENDS:
        raise SimlibError(
            f"{directory} uses backend {manifest.backend!r}, which this simlib does not know: upgrade simlib"
        )
    return backend_class(manifest.backend).open_folder(directory, manifest, uri=uri, mmap=mmap)


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
    return backend_class(backend).create_empty(
        dim,
        config or IndexConfig(),
        attributes=attributes,
        uri=uri,
        collection=collection,
        expected_count=expected_count,
    )
