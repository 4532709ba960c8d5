"""The FAISS backend: a vector index that also keeps each vector's id, path, label and attributes.

Cosine similarity is the inner product of unit vectors. FAISS stores vectors at positions
0..n-1; this class maps positions to the caller's ids and metadata. Removal marks a
tombstone (HNSW cannot delete) that searches skip through an ``IDSelectorBitmap``; the
same bitmap applies attribute filters *inside* the search, so a filtered top-K is a true
top-K among matching items. :meth:`VectorIndex.compact` rebuilds without the tombstones
(automatic on save for exact indexes, and whenever a quarter of the rows are dead).

On disk an index is a folder: ``index.faiss``, ``records.jsonl``, ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simlib.config import IndexConfig
from simlib.errors import SimlibError
from simlib.index.base import Filters, IndexBackend, Record, normalized, resolve_kind
from simlib.index.manifest import MANIFEST_FILE, IndexManifest, read_manifest
from simlib.storage import atomic_dir, save_json

INDEX_FILE = "index.faiss"
RECORDS_FILE = "records.jsonl"
IVFPQ_MIN = 1_000
COMPACT_FRACTION = 0.25
BLAS_THRESHOLD = 20  # queries from which exact batched search uses BLAS (FAISS's long-time default)
METRIC = "cosine (inner product of unit vectors)"


def import_faiss():
    """Import FAISS with OpenMP threads that sleep when idle (``OMP_WAIT_POLICY=PASSIVE``).

    OpenMP threads otherwise spin after every parallel region, taking the cores TensorFlow's
    threads (and anything else on a shared machine) need: on 2 busy cores one exact query over
    10k vectors took ~100 ms spinning against ~1 ms passive (benchmarks/bench_index.py). The
    policy is read once, when the OpenMP runtime loads, so it is set before the first import;
    a value the user set is kept.

    Exact search of a batch goes through BLAS from 20 queries on: faiss 1.15 sets that threshold
    to 128,000, and its per-query scan instead made batched exact search 3-4x slower here (300
    queries over 1M vectors: 37 against 150 q/s, same results). A lower value set before is kept.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import faiss  # lazy: FAISS (the one place it is imported)

    faiss.cvar.distance_compute_blas_threshold = min(faiss.cvar.distance_compute_blas_threshold, BLAS_THRESHOLD)
    return faiss


class VectorIndex(IndexBackend):
    """Cosine top-K search over unit vectors with ids and metadata, backed by FAISS.

    Build with :meth:`build`, reopen with :meth:`load`.
    """

    backend = "faiss"

    def __init__(self, dim: int, config: IndexConfig, kind: str, faiss_index: Any) -> None:
        self.dim = dim
        self.config = config
        self.kind = kind
        self._index = faiss_index
        self._ids = np.zeros((0,), np.int64)
        self._alive = np.zeros((0,), bool)
        self._paths: list[str | None] = []
        self._labels: list[str | None] = []
        self._attrs: list[dict[str, str]] = []
        self._pos: dict[int, int] = {}
        # caches of derived arrays, valid while _generation (bumped whenever rows are added or rebuilt) holds
        self._generation = 0
        self._columns: dict[str, np.ndarray] = {}
        self._by_path: dict[str, list[int]] | None = None
        self._cached_at = 0
        self.manifest = IndexManifest(backend=self.backend, dimension=dim, kind=kind, index_config=config)
        self.mapped = False  # vectors memory-mapped from the file (load(mmap=True)): adding is refused

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        records: Sequence[Record],
        config: IndexConfig | None = None,
        *,
        uri: str | None = None,
        collection: str | None = None,
    ) -> VectorIndex:
        """Build an index from vectors (normalised here) and one :class:`Record` per vector.

        All vectors at once: an IVF-PQ index trains its quantisers on them.
        """
        if uri or collection:
            raise SimlibError("--uri and --collection apply to the Milvus backend only")
        config = config or IndexConfig()
        x = normalized(vectors)
        kind = resolve_kind(config.kind, len(x))
        index = cls(x.shape[1], config, kind, new_faiss_index(x.shape[1], kind, config, x))
        index.add(x, records)
        return index

    def add(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        """Add vectors with their records; ids must be new to the index."""
        x = normalized(vectors, self.dim)
        if len(x) != len(records):
            raise SimlibError(f"{len(x)} vectors but {len(records)} records")
        new_ids = [int(r.id) for r in records]
        if self.mapped:
            # FAISS aborts the whole process when it grows a mapped vector store
            raise SimlibError("this index was opened memory-mapped (read-only): reopen it without mmap to add images")
        clash = [i for i in new_ids if i in self._pos]
        if clash or len(set(new_ids)) != len(new_ids):
            raise SimlibError(f"ids already in the index or repeated: {sorted(set(clash))[:5] or new_ids[:5]}")
        start = len(self._ids)
        self._index.add(x)
        self._ids = np.concatenate([self._ids, np.asarray(new_ids, np.int64)])
        self._alive = np.concatenate([self._alive, np.ones(len(x), bool)])
        for offset, r in enumerate(records):
            self._paths.append(r.path)
            self._labels.append(r.label)
            self._attrs.append(dict(r.attributes))
            self._pos[int(r.id)] = start + offset
        self._generation += 1

    def remove(self, ids: Sequence[int]) -> int:
        """Remove ids (unknown ones are ignored); returns how many were removed."""
        removed = 0
        for i in ids:
            pos = self._pos.pop(int(i), None)
            if pos is not None:
                self._alive[pos] = False
                removed += 1
        if removed and (len(self._alive) - self._alive.sum()) > COMPACT_FRACTION * len(self._alive):
            self.compact()
        return removed

    def compact(self) -> None:
        """Rebuild the FAISS index without removed rows (positions change, ids do not)."""
        keep = np.flatnonzero(self._alive)
        if len(keep) == len(self._alive):
            return
        vectors = self.vectors(keep)
        records = [self._record_at(p) for p in keep]
        fresh = VectorIndex(self.dim, self.config, self.kind, None)
        if len(keep):
            fresh._index = new_faiss_index(self.dim, self.kind, self.config, vectors)
            fresh.add(vectors, records)
        else:
            fresh._index = new_faiss_index(self.dim, self.kind, self.config, None)
        self._index, self._ids, self._alive = fresh._index, fresh._ids, fresh._alive
        self.mapped = False  # the rebuilt index lives in memory
        self._paths, self._labels, self._attrs, self._pos = fresh._paths, fresh._labels, fresh._attrs, fresh._pos
        self._generation += 1

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._pos)

    @property
    def ids(self) -> np.ndarray:
        """Ids of the live vectors, in insertion order."""
        return self._ids[self._alive]

    def __contains__(self, id_: int) -> bool:
        return int(id_) in self._pos

    def record(self, id_: int) -> Record:
        """The record stored for ``id_``."""
        pos = self._pos.get(int(id_))
        if pos is None:
            raise SimlibError(f"id {id_} is not in the index")
        return self._record_at(pos)

    def _record_at(self, pos: int) -> Record:
        return Record(int(self._ids[pos]), self._paths[pos], self._labels[pos], dict(self._attrs[pos]))

    def records(self) -> list[Record]:
        """Records of the live vectors, in insertion order."""
        return [self._record_at(p) for p in np.flatnonzero(self._alive)]

    def vectors(self, positions: np.ndarray | None = None) -> np.ndarray:
        """Stored vectors (exact for flat/HNSW, from the re-ranking store for IVF-PQ)."""
        positions = np.flatnonzero(self._alive) if positions is None else np.asarray(positions)
        store = self._index.refine_index if self.kind == "ivfpq" else self._index
        if len(positions) == 0:
            return np.zeros((0, self.dim), np.float32)
        all_vectors = store.reconstruct_n(0, store.ntotal)
        return np.ascontiguousarray(all_vectors[positions])

    def vectors_of(self, ids: Sequence[int]) -> np.ndarray:
        """Stored vectors of the given ids, (len(ids), d), without reading the whole index."""
        store = self._index.refine_index if self.kind == "ivfpq" else self._index
        out = np.zeros((len(ids), self.dim), np.float32)
        for row, id_ in enumerate(ids):
            pos = self._pos.get(int(id_))
            if pos is None:
                raise SimlibError(f"id {id_} is not in the index")
            out[row] = store.reconstruct(int(pos))
        return out

    def ids_with_path(self, path: str) -> list[int]:
        """Ids of the live records whose path is ``path`` (a cached lookup, not a scan)."""
        if self._cached_at != self._generation:
            self._reset_caches()
        if self._by_path is None:
            by_path: dict[str, list[int]] = {}
            for pos, p in enumerate(self._paths):
                if p is not None:
                    by_path.setdefault(p, []).append(pos)
            self._by_path = by_path
        return [int(self._ids[p]) for p in self._by_path.get(path, ()) if self._alive[p]]

    def _reset_caches(self) -> None:
        self._columns, self._by_path, self._cached_at = {}, None, self._generation

    def search(
        self,
        queries: np.ndarray,
        k: int,
        filters: Filters | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine similarity among live (and, with ``filters``, matching) vectors.

        Args:
            queries: (q, d) or (d,) vectors; normalised here.
            k: results per query.
            filters: attribute (or "label") -> allowed value or list of values; all must match.

        Returns:
            ``(scores, ids)``, both (q, k), best first; missing results are padded with
            score ``-inf`` and id ``-1``.
        """
        faiss = import_faiss()

        x = normalized(queries, self.dim)
        if k < 1:
            raise SimlibError(f"k must be at least 1, not {k}")
        if any(isinstance(v, str) or len(v) for v in (filters or {}).values()):
            allowed = self._alive & self._filter_mask(filters)
            n_allowed = int(allowed.sum())
        else:  # no O(n) mask work per query when nothing is filtered
            allowed, n_allowed = self._alive, len(self._pos)
        kk = min(k, n_allowed)
        scores = np.full((len(x), k), -np.inf, np.float32)
        ids = np.full((len(x), k), -1, np.int64)
        if kk == 0:
            return scores, ids
        params = None
        if n_allowed < len(allowed):
            bits = np.packbits(allowed, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
            params = self._search_params(sel)
        elif self.kind != "flat":
            params = self._search_params(None)
        d, i = self._index.search(x, kk, params=params)
        valid = i >= 0
        scores[:, :kk] = np.where(valid, d, -np.inf)
        ids[:, :kk] = np.where(valid, self._ids[np.maximum(i, 0)], -1)
        return scores, ids

    def _search_params(self, sel):
        faiss = import_faiss()

        c = self.config
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=sel, efSearch=max(c.hnsw_ef_search, 1))
        if self.kind == "ivfpq":
            base = faiss.SearchParametersIVF(sel=sel, nprobe=c.nprobe(faiss.extract_index_ivf(self._index).nlist))
            return faiss.IndexRefineSearchParameters(k_factor=float(c.rerank_factor), base_index_params=base)
        return faiss.SearchParameters(sel=sel)

    def _filter_mask(self, filters: Filters | None) -> np.ndarray:
        mask = np.ones(len(self._ids), bool)
        for key, want in (filters or {}).items():
            allowed = [want] if isinstance(want, str) else list(want)
            if allowed:
                mask &= np.isin(self._column(key), allowed)
        return mask

    def _column(self, key: str) -> np.ndarray:
        """One attribute (or "label") for every row, as an array; cached until rows are added or rebuilt."""
        # the row count alone is no safe key: compact() then add() can bring it back to a cached value
        if self._cached_at != self._generation:
            self._reset_caches()
        col = self._columns.get(key)
        if col is None:
            values = self._labels if key == "label" else [a.get(key) for a in self._attrs]
            col = np.asarray(["\0" if v is None else v for v in values], dtype=object)  # None matches nothing
            self._columns[key] = col
        return col

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike, write_extra: Callable[[Path], None] | None = None) -> Path:
        """Write the index folder atomically (see :meth:`IndexBackend.save`); removed rows are dropped first."""
        faiss = import_faiss()

        self.compact()  # tombstones are not persisted
        directory = Path(directory)
        manifest = self._saved_manifest(faiss_version=faiss.__version__, metric=METRIC)
        with atomic_dir(directory) as tmp:
            faiss.write_index(self._index, str(tmp / INDEX_FILE))
            with open(tmp / RECORDS_FILE, "w", encoding="utf-8") as f:
                for r in self.records():
                    # ASCII escapes keep file names that are not valid UTF-8 (lone surrogates) round-trippable
                    f.write(json.dumps(dataclasses.asdict(r)) + "\n")
            save_json(tmp / MANIFEST_FILE, manifest.to_dict())
            if write_extra is not None:
                write_extra(tmp)
        self.manifest = manifest
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = False) -> VectorIndex:
        """Open an index folder written by :meth:`save`, checking it is whole and consistent.

        Args:
            directory: the index folder.
            mmap: map the stored vectors from the file instead of reading them into memory: the
                index opens at once and its vectors take page cache the system can reclaim, not
                process memory (an index larger than RAM can be searched). Searching and removing
                work as usual; adding is refused.
        """
        directory = Path(directory)
        return cls.open_folder(directory, read_manifest(directory), mmap=mmap)

    @classmethod
    def open_folder(
        cls, directory: Path, manifest: IndexManifest, *, uri: str | None = None, mmap: bool = False
    ) -> VectorIndex:
        """Open the folder ``directory`` whose manifest is ``manifest`` (see :meth:`load`)."""
        faiss = import_faiss()

        if manifest.backend != cls.backend:
            raise SimlibError(f"{directory} is a {manifest.backend} index, not a FAISS one: open it with open_index")
        if uri:
            raise SimlibError(f"{directory} is a FAISS index: --uri applies to Milvus indexes only")
        dim, count, kind = manifest.dimension, manifest.count, manifest.kind
        faiss_index = _read_faiss(directory / INDEX_FILE, mmap)
        records = _read_records(directory / RECORDS_FILE)
        if faiss_index.d != dim or faiss_index.ntotal != len(records) or count != len(records):
            raise SimlibError(
                f"{directory} is inconsistent: manifest says {count} x {dim}, the FAISS file holds "
                f"{faiss_index.ntotal} x {faiss_index.d} and there are {len(records)} records; rebuild the index"
            )
        expected = _FAISS_TYPES.get(kind)
        if expected is None or type(faiss_index).__name__ != expected:
            raise SimlibError(
                f"{directory} is inconsistent: manifest says a {kind!r} index, the FAISS file holds a "
                f"{type(faiss_index).__name__}; rebuild the index"
            )
        if faiss_index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise SimlibError(f"{directory / INDEX_FILE} does not use the inner-product metric; rebuild the index")
        index = cls(dim, manifest.index_config, kind, faiss_index)
        index._ids = np.asarray([r.id for r in records], np.int64)
        index._alive = np.ones(len(records), bool)
        index._paths = [r.path for r in records]
        index._labels = [r.label for r in records]
        index._attrs = [dict(r.attributes) for r in records]
        index._pos = {r.id: p for p, r in enumerate(records)}
        index._generation += 1
        index.manifest = manifest
        index.mapped = mmap
        return index

    @classmethod
    def create_empty(
        cls,
        dim: int,
        config: IndexConfig,
        *,
        attributes: Sequence[str] = (),
        uri: str | None = None,
        collection: str | None = None,
        expected_count: int = 0,
    ) -> VectorIndex:
        """An empty exact or HNSW index (``auto`` resolved from ``expected_count``) to add to in chunks."""
        if uri or collection:
            raise SimlibError("--uri and --collection apply to the Milvus backend only")
        kind = resolve_kind(config.kind, expected_count)
        if kind == "ivfpq":
            raise SimlibError("an IVF-PQ index is trained on the whole gallery: build it with VectorIndex.build")
        return cls(dim, config, kind, new_faiss_index(dim, kind, config, None))


# The FAISS class each kind is saved as (read_index returns the concrete class).
_FAISS_TYPES = {"flat": "IndexFlatIP", "hnsw": "IndexHNSWFlat", "ivfpq": "IndexRefineFlat"}


def _read_faiss(path: Path, mmap: bool = False):
    """``faiss.read_index`` with a clear error, refusing declared sizes the file cannot hold.

    ``mmap`` maps the flat vector stores (every kind's full vectors) instead of reading them.
    """
    faiss = import_faiss()

    if not path.is_file():
        raise SimlibError(f"{path} is missing; rebuild the index")
    # FAISS allocates whatever size a vector header declares (up to 1 TiB by default): a tampered
    # header could exhaust memory. Stored vectors are never larger than the file; tables FAISS
    # computes on loading (IVF-PQ's precomputed table, ~64 MB for 1M vectors) get 1 GiB of slack.
    limit = hasattr(faiss, "set_deserialization_vector_byte_limit")  # absent from older faiss releases
    if limit:
        previous = faiss.get_deserialization_vector_byte_limit()
        faiss.set_deserialization_vector_byte_limit(2 * path.stat().st_size + 2**30)
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except (RuntimeError, MemoryError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise SimlibError(f"{path} is corrupt ({first[-160:]}); rebuild the index") from None
    finally:
        if limit:
            faiss.set_deserialization_vector_byte_limit(previous)


def _read_records(path: Path) -> list[Record]:
    """The records of ``records.jsonl``, checked for types and unique ids."""
    records: list[Record] = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                r = json.loads(line)
                attrs = r.get("attributes") or {}
                ok = isinstance(attrs, dict) and all(isinstance(v, str) for v in attrs.values())
                ok = ok and all(r.get(k) is None or isinstance(r.get(k), str) for k in ("path", "label"))
                id_ok = isinstance(r["id"], int) and not isinstance(r["id"], bool) and -(2**63) <= r["id"] < 2**63
                if not (ok and id_ok):
                    raise ValueError(f"line {n} has fields of the wrong type")
                records.append(Record(r["id"], r.get("path"), r.get("label"), attrs))
    except FileNotFoundError:
        raise SimlibError(f"{path} is missing; rebuild the index") from None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise SimlibError(f"{path} is corrupt ({type(e).__name__}: {e}); rebuild the index") from None
    if len({r.id for r in records}) != len(records):
        raise SimlibError(f"{path} is corrupt (repeated ids); rebuild the index")
    return records


def new_faiss_index(dim: int, kind: str, config: IndexConfig, train: np.ndarray | None):
    """An empty FAISS index of ``kind``, trained on ``train`` where the kind needs it."""
    faiss = import_faiss()

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.hnsw.efSearch = config.hnsw_ef_search
        return index
    if kind == "ivfpq":
        n = 0 if train is None else len(train)
        if n < IVFPQ_MIN:
            raise SimlibError(
                f"an IVF-PQ index needs at least {IVFPQ_MIN:,} vectors to train ({n} given): use --kind flat"
            )
        pq_m = max(m for m in range(1, config.pq_m + 1) if dim % m == 0)  # sub-quantisers must divide dim
        nlist = config.ivf_nlist or int(min(max(4 * math.sqrt(n), 8), n // 39))
        # 8-bit codes need 256 x 39 training points; fewer bits on small sets keep k-means well fed
        nbits = int(min(8, max(4, math.floor(math.log2(n / 39)))))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, nbits, faiss.METRIC_INNER_PRODUCT)
        ivf.nprobe = config.nprobe(nlist)
        index = faiss.IndexRefineFlat(ivf)
        index.k_factor = float(config.rerank_factor)
        index.train(train)  # faiss' Python wrappers keep quantizer and ivf alive with the index
        return index
    raise SimlibError(f"unknown index kind {kind!r}: use auto, flat, hnsw or ivfpq")
