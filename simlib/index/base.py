"""The index interface every backend implements, and what the backends share.

:class:`IndexBackend` is everything :class:`simlib.search.Searcher`, the CLI and the app call on
an index: nothing is probed with ``getattr``. A backend subclasses it and is listed in
:mod:`simlib.index.registry`, which opens a folder by the backend its manifest names.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from simlib import __version__
from simlib.config import IndexConfig
from simlib.errors import SimlibError
from simlib.index.manifest import FORMAT_VERSION, IndexManifest

Filters = Mapping[str, str | Sequence[str]]
# Below this many vectors exact search is fast enough (~2 ms per query at 100k x 128 here).
AUTO_FLAT_MAX = 100_000
MAX_FILTER_VALUES = 200  # attributes with more distinct values make no filter menu


@dataclasses.dataclass(frozen=True)
class Record:
    """What the index knows about one image besides its vector."""

    id: int
    path: str | None = None
    label: str | None = None
    attributes: dict[str, str] = dataclasses.field(default_factory=dict)


def resolve_kind(kind: str, n: int) -> str:
    """The concrete index kind for ``kind`` ("auto" picks exact below 100k vectors, else HNSW)."""
    if kind != "auto":
        return kind
    return "flat" if n <= AUTO_FLAT_MAX else "hnsw"


def normalized(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (n, d) array of unit rows; one vector becomes (1, d).

    Raises:
        SimlibError: the shape does not fit ``dim``, or a value is NaN or infinite.
    """
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, d)"
        raise SimlibError(f"vectors of shape {x.shape} do not fit this index: expected {want}")
    if not np.isfinite(x).all():
        raise SimlibError("vectors contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def distinct_values(records: Iterable[Record], max_values: int = MAX_FILTER_VALUES) -> dict[str, list[str]]:
    """Distinct values of each attribute (and "label") over ``records``, sorted, for filter menus.

    Attributes with a single value (nothing to choose) or more than ``max_values`` are left out.
    """
    values: dict[str, set[str]] = {}
    for r in records:
        items = dict(r.attributes)
        if r.label is not None:
            items["label"] = r.label
        for k, v in items.items():
            values.setdefault(k, set()).add(v)
    return {k: sorted(v) for k, v in sorted(values.items()) if 1 < len(v) <= max_values}


class IndexBackend(abc.ABC):
    """Cosine top-K search over unit vectors with ids, records and attribute filters.

    Attributes:
        backend: the registry name ("faiss", "milvus").
        dim: vector dimension.
        kind: the resolved index kind ("flat", "hnsw", "ivfpq").
        config: the :class:`IndexConfig` it was built with.
        manifest: the folder's :class:`IndexManifest` (model fingerprint, threshold, next id, ...);
            replace it to change what the next :meth:`save` writes.
    """

    backend: ClassVar[str]
    # ------------------------------------------------------------------ capabilities (ask these, never the name)
    #: How a gallery goes in. False: from all its vectors at once (:meth:`build`: FAISS, whose IVF-PQ trains on
    #: them). True: streamed into an empty index (:meth:`create_empty`, then :meth:`add` chunk by chunk) as it is
    #: embedded, so memory stays at one chunk whatever the gallery size (Milvus).
    streams_build: ClassVar[bool] = False
    #: The vectors live outside the index folder, at an address the folder names (:meth:`location`: a Milvus
    #: uri and collection): opening and creating take ``uri`` / ``collection``.
    has_location: ClassVar[bool] = False
    #: A new index is independent of a served one of the same backend until it is saved (it is held in memory):
    #: a gallery can be rebuilt (re-indexed with another model) while the old index keeps answering. False: a
    #: rebuild writes into the place where the served index lives.
    rebuilds_while_serving: ClassVar[bool] = True

    dim: int
    kind: str
    config: IndexConfig
    manifest: IndexManifest

    def location(self) -> dict[str, str]:
        """Where the index lives besides its folder, as keyword arguments of :func:`simlib.index.create_index`
        (``uri``, ``collection``): a rebuild passes them to go to the same place. ``{}`` for an index held in
        memory and saved in its folder."""
        return {}

    # ------------------------------------------------------------------ construction (used by the registry)
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        records: Sequence[Record],
        config: IndexConfig | None = None,
        *,
        uri: str | None = None,
        collection: str | None = None,
    ) -> IndexBackend:
        """An index of ``vectors`` (normalised by the backend), one :class:`Record` each, built in one go.

        The default creates an empty index (:meth:`create_empty`) and adds everything; a backend that
        needs all vectors to build (FAISS: IVF-PQ trains on them) overrides it.
        """
        index = cls.create_empty(
            int(np.shape(vectors)[-1]),
            config or IndexConfig(),
            attributes=sorted({k for r in records for k in r.attributes}),
            uri=uri,
            collection=collection,
            expected_count=len(records),
        )
        try:
            index.add(vectors, records)
            index.settle()
        except BaseException:
            index.close()
            raise
        return index

    @classmethod
    @abc.abstractmethod
    def open_folder(
        cls, directory: Path, manifest: IndexManifest, *, uri: str | None = None, mmap: bool = False
    ) -> IndexBackend:
        """Reopen the index folder ``directory`` whose manifest is ``manifest``.

        Args:
            directory: the folder.
            manifest: its manifest, already read.
            uri: Milvus: reach the collection at this address instead of the manifest's.
            mmap: FAISS: memory-map the stored vectors (read-only).
        """

    @classmethod
    @abc.abstractmethod
    def create_empty(
        cls,
        dim: int,
        config: IndexConfig,
        *,
        attributes: Sequence[str] = (),
        uri: str | None = None,
        collection: str | None = None,
        expected_count: int = 0,
    ) -> IndexBackend:
        """An empty index to :meth:`add` to in chunks (see :func:`simlib.index.create_index`)."""

    # ------------------------------------------------------------------ changing
    @abc.abstractmethod
    def add(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        """Add vectors (normalised by the backend) with one record each; ids must be new."""

    @abc.abstractmethod
    def remove(self, ids: Sequence[int]) -> int:
        """Remove ids (unknown ones ignored); returns how many were removed."""

    def settle(self) -> None:
        """After a bulk load: wait until the additions are durable and indexed (a no-op in memory)."""
        return None

    # ------------------------------------------------------------------ reading
    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int, filters: Filters | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine similarity among stored (and, with ``filters``, matching) vectors.

        Args:
            queries: (q, d) or (d,) vectors; normalised here.
            k: results per query.
            filters: attribute (or "label") -> allowed value or list of values; all must match;
                an unknown attribute matches nothing, an empty list filters nothing.

        Returns:
            ``(scores, ids)``, both (q, k), best first, padded with score ``-inf`` and id ``-1``.
        """

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __contains__(self, id_: int) -> bool: ...

    @property
    @abc.abstractmethod
    def ids(self) -> np.ndarray:
        """Ids of the stored vectors."""

    @abc.abstractmethod
    def record(self, id_: int) -> Record:
        """The record stored for ``id_`` (SimlibError when absent)."""

    @abc.abstractmethod
    def records(self) -> list[Record]:
        """Every record."""

    @abc.abstractmethod
    def vectors_of(self, ids: Sequence[int]) -> np.ndarray:
        """The stored unit vectors of ``ids``, (len(ids), d), in that order (SimlibError for an absent id)."""

    def ids_with_path(self, path: str) -> list[int]:
        """Ids of the records whose path is ``path`` (compared as given: pass a resolved path)."""
        return [r.id for r in self.records() if r.path == path]

    def attribute_values(self, max_values: int = MAX_FILTER_VALUES) -> dict[str, list[str]]:
        """Distinct values per attribute (and "label") for filter menus (see :func:`distinct_values`)."""
        return distinct_values(self.records(), max_values)

    # ------------------------------------------------------------------ persistence
    @abc.abstractmethod
    def save(self, directory: str | os.PathLike, write_extra: Callable[[Path], None] | None = None) -> Path:
        """Persist the index and write its folder (manifest + backend files) atomically.

        Args:
            directory: the folder; an existing one is replaced only once the new one is complete.
            write_extra: called with the temporary folder to add files (e.g. the model) to the same
                atomic write.
        """

    def close(self) -> None:
        """Release connections and files (nothing to release in memory)."""
        return None

    def __enter__(self) -> IndexBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _saved_manifest(self, **fields: Any) -> IndexManifest:
        """The manifest a save writes: the current one with the index's own description refreshed."""
        return self.manifest.replace(
            backend=self.backend,
            dimension=self.dim,
            kind=self.kind,
            count=len(self),
            index_config=self.config,
            format_version=FORMAT_VERSION,
            simlib_version=__version__,
            saved_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **fields,
        )
