"""Vector indexes: one interface (:class:`IndexBackend`), two backends (FAISS in-process, Milvus).

- :mod:`simlib.index.base`: the interface, :class:`Record`, filters, shared helpers.
- :mod:`simlib.index.manifest`: :class:`IndexManifest`, the typed ``manifest.json``.
- :mod:`simlib.index.faiss`: :class:`VectorIndex` (default); :mod:`simlib.index.milvus`: ``MilvusIndex``
  (its collection schema, filter expressions and connection in :mod:`simlib.index.milvus_schema`).
- :mod:`simlib.index.registry`: the backends by name, :func:`open_index` by a folder's manifest,
  :func:`create_index` (empty, to stream into), :func:`build_index` (from all vectors at once).

Callers outside this package never branch on a backend's name: they ask its capabilities
(:attr:`IndexBackend.streams_build`, :attr:`IndexBackend.has_location`,
:attr:`IndexBackend.rebuilds_while_serving`) and :meth:`IndexBackend.location`.

Importing this package loads neither FAISS nor pymilvus: they load when an index is built or opened.
"""

from simlib.index.base import AUTO_FLAT_MAX, Filters, IndexBackend, Record, distinct_values, normalized, resolve_kind
from simlib.index.faiss import VectorIndex
from simlib.index.manifest import FORMAT_VERSION, MANIFEST_FILE, IndexManifest, Threshold, read_manifest
from simlib.index.registry import BACKENDS, DEFAULT_BACKEND, backend_class, build_index, create_index, open_index

__all__ = [
    "AUTO_FLAT_MAX",
    "BACKENDS",
    "DEFAULT_BACKEND",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "Filters",
    "IndexBackend",
    "IndexManifest",
    "Record",
    "Threshold",
    "VectorIndex",
    "backend_class",
    "build_index",
    "create_index",
    "distinct_values",
    "normalized",
    "open_index",
    "read_manifest",
    "resolve_kind",
]
