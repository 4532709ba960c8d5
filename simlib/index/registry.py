"""Open an index folder by the backend its manifest names, or create an empty index of a backend.

Backends are listed by name (:data:`BACKENDS`) with the class that implements
:class:`~simlib.index.base.IndexBackend`; a backend's client library (faiss, pymilvus) is imported
only when an index of it is built, opened or created. Callers ask a backend class its capabilities
(``streams_build``, ``has_location``, ``rebuilds_while_serving``), never its name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from simlib.config import IndexConfig
from simlib.errors import SimlibError
from simlib.index.base import IndexBackend, Record
from simlib.index.faiss import VectorIndex
from simlib.index.manifest import index_folder, read_manifest
from simlib.index.milvus import MilvusIndex

# The backends by registry name. Neither module imports its client library (faiss, pymilvus) until an
# index of it is built or opened.
BACKENDS: dict[str, type[IndexBackend]] = {VectorIndex.backend: VectorIndex, MilvusIndex.backend: MilvusIndex}
DEFAULT_BACKEND = VectorIndex.backend  # in-process, nothing to run beside simlib


def backend_class(name: str) -> type[IndexBackend]:
    """The class implementing backend ``name``."""
    if name not in BACKENDS:
        raise SimlibError(f"unknown backend {name!r}: use {' or '.join(BACKENDS)}")
    return BACKENDS[name]


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


def build_index(
    backend: str,
    vectors: np.ndarray,
    records: Sequence[Record],
    config: IndexConfig | None = None,
    *,
    uri: str | None = None,
    collection: str | None = None,
) -> IndexBackend:
    """An index of backend ``backend`` holding ``vectors`` with their ``records``, built in one go
    (:meth:`IndexBackend.build`); ``uri`` and ``collection`` as for :func:`create_index`."""
    return backend_class(backend).build(vectors, records, config, uri=uri, collection=collection)
