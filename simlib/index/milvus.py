"""The Milvus backend: the :class:`~simlib.index.base.IndexBackend` interface on a Milvus collection.

One client API (``pymilvus.MilvusClient(uri=...)``) reaches Milvus Lite (a local ``.db``
path: tests, laptops; one process at a time) and a Milvus server or cluster
(``http://host:19530``; the token comes from ``$MILVUS_TOKEN``, never from the manifest).

The collection's schema, the filter expressions and connecting are in :mod:`simlib.index.milvus_schema`;
this module holds the index over it. Bulk loads
insert chunk by chunk into a loaded collection (Milvus indexes sealed segments in the background
and searches growing ones directly); :meth:`MilvusIndex.settle` flushes and waits for the index
build at the end. ``auto`` picks FLAT up to 100k expected vectors, HNSW above, as for FAISS;
``ivfpq`` maps to IVF_FLAT. Counts and id checks read with ``consistency_level="Strong"``;
searches with "Session", which sees this client's writes at once without Strong's wait.

Milvus 2.3 has no nullable fields: a missing path, label or attribute is stored as "" and read
back as missing.

On disk an index is a folder with ``manifest.json`` (backend, uri, collection, dimension,
kind, attribute fields) and, when saved by a searcher, ``model/``; the vectors live in Milvus.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simlib.config import IndexConfig
from simlib.errors import SimlibError
from simlib.index.base import (
    MAX_FILTER_VALUES,
    Filters,
    IndexBackend,
    Record,
    distinct_values,
    normalized,
    resolve_kind,
)
from simlib.index.manifest import MANIFEST_FILE, IndexManifest, read_manifest
from simlib.index.milvus_schema import (
    _NAME,
    DEFAULT_COLLECTION,
    ID,
    INDEX_TYPES,
    LABEL,
    MAX_PATH,
    MAX_VALUE,
    PATH,
    VECTOR,
    attribute_fields,
    connect,
    create_collection,
    default_nlist,
    filter_expression,
    is_lite,
    public_uri,
    quote,
)
from simlib.storage import atomic_dir, save_json

INSERT_CHUNK = 1000
QUERY_CHUNK = 1000
RECORD_CACHE = 10_000
# Counts and id checks must see every client's writes: "Strong" (a 2.3 server then waits for its
# ~200 ms time tick). Searches and record reads use "Session": this client's own writes at once,
# other clients' within Milvus' bounded staleness, and no wait (3 ms instead of 250 ms a search).
SEARCH_CONSISTENCY = "Session"


# ----------------------------------------------------------------------------- the index
class MilvusIndex(IndexBackend):
    """Cosine top-K search with ids, metadata and filters, in a Milvus collection.

    Create with :meth:`create` (an empty collection; :meth:`add` in chunks), reopen with
    :meth:`open`. Close with :meth:`close` (Milvus Lite holds its file until then).
    """

    backend = "milvus"
    streams_build = True
    has_location = True
    rebuilds_while_serving = False  # a rebuild replaces the collection the served index reads

    def __init__(
        self,
        client,
        uri: str,
        collection: str,
        dim: int,
        config: IndexConfig,
        fields: dict[str, str],
        kind: str,
    ) -> None:
        self._client = client
        self.uri = uri
        self.collection = collection
        self.dim = dim
        self.config = config
        self.fields = fields
        self.kind = kind
        self._unsettled = False
        self._closed = False
        self._cache: OrderedDict[int, Record] = OrderedDict()
        self._values_cache: tuple[int, int, dict[str, list[str]]] | None = None
        self.manifest = IndexManifest(
            backend=self.backend,
            dimension=dim,
            kind=kind,
            index_config=config,
            uri=uri,
            collection=collection,
            attribute_fields=dict(fields),
            milvus_index_type=INDEX_TYPES[kind],
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        uri: str,
        dim: int,
        attributes: Sequence[str] = (),
        config: IndexConfig | None = None,
        collection: str = DEFAULT_COLLECTION,
        token: str | None = None,
        expected_count: int = 0,
    ) -> MilvusIndex:
        """A new, empty collection (an existing one of that name is replaced).

        Args:
            uri: a local ``.db`` path (Milvus Lite) or ``http://host:19530``.
            dim: vector dimension.
            attributes: attribute names the records carry (each becomes a filterable field).
            config: index kind and parameters (``kind="auto"`` is resolved from ``expected_count``).
            collection: collection name (letters, digits, underscores).
            token: overrides ``$MILVUS_TOKEN``.
            expected_count: how many vectors the bulk load will bring.
        """
        if not _NAME.match(collection):
            raise SimlibError(f"collection name {collection!r}: use letters, digits and underscores")
        uri = public_uri(uri)
        fields = attribute_fields(attributes)
        config = config or IndexConfig()
        kind = resolve_kind(config.kind, expected_count)
        client = connect(uri, token)
        params = create_collection(client, collection, int(dim), fields, kind, config, expected_count)
        index = cls(client, uri, collection, int(dim), config, fields, kind)
        if "nlist" in params:  # searches probe a share of these cells
            index.manifest = index.manifest.replace(ivf_nlist=params["nlist"])
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
    ) -> MilvusIndex:
        """:meth:`create` as the registry calls it (``uri`` required)."""
        if not uri:
            raise SimlibError("the Milvus backend needs --uri: a path ending in .db (Milvus Lite) or http://host:19530")
        return cls.create(
            uri, dim, attributes, config, collection=collection or DEFAULT_COLLECTION, expected_count=expected_count
        )

    def location(self) -> dict[str, str]:
        """``{"uri", "collection"}``: where the collection is (see :meth:`IndexBackend.location`)."""
        return {"uri": self.uri, "collection": self.collection}

    def _nlist(self) -> int:
        """IVF cells of the collection's index: as created (folders from before: estimated once)."""
        if self.manifest.ivf_nlist is None:
            self.manifest = self.manifest.replace(ivf_nlist=self.config.ivf_nlist or default_nlist(len(self)))
        return int(self.manifest.ivf_nlist)  # type: ignore[arg-type]

    def add(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        """Insert vectors with their records in chunks; ids must be new to the index."""
        x = normalized(vectors, self.dim)
        if len(x) != len(records):
            raise SimlibError(f"{len(x)} vectors but {len(records)} records")
        new_ids = [int(r.id) for r in records]
        if len(set(new_ids)) != len(new_ids):
            raise SimlibError(f"ids repeated in one add: {new_ids[:5]}")
        clash = self._existing(new_ids)
        if clash:
            raise SimlibError(f"ids already in the index: {sorted(clash)[:5]}")
        rows = [self._row(v, r) for v, r in zip(x, records, strict=True)]  # all checked before any is written
        for start in range(0, len(rows), INSERT_CHUNK):
            self._client.insert(self.collection, rows[start : start + INSERT_CHUNK])
        self._values_cache = None
        self._unsettled = True

    def _row(self, vector: np.ndarray, r: Record) -> dict[str, Any]:
        unknown = set(r.attributes) - set(self.fields)
        if unknown:
            raise SimlibError(
                f"record {r.id} has attributes {sorted(unknown)} this collection was not created with: "
                "rebuild the index with them"
            )
        row = {ID: int(r.id), VECTOR: vector.tolist(), PATH: self._checked(r.path or "", MAX_PATH, "path")}
        row[LABEL] = self._checked(r.label or "", MAX_VALUE, "label")
        for name, field in self.fields.items():
            if name != LABEL:
                row[field] = self._checked(r.attributes.get(name, ""), MAX_VALUE, name)
        return row

    @staticmethod
    def _checked(value: Any, limit: int, what: str) -> str:
        text = str(value)
        if len(text.encode("utf-8")) > limit:
            raise SimlibError(f"{what} {text[:40]!r}... is longer than Milvus' {limit}-byte limit for this field")
        return text

    def remove(self, ids: Sequence[int]) -> int:
        """Remove ids (unknown ones are ignored); returns how many were removed."""
        present = self._existing([int(i) for i in ids])
        if present:
            self._client.delete(self.collection, ids=sorted(present))
            for i in present:
                self._cache.pop(i, None)
            self._values_cache = None
        return len(present)

    def _existing(self, ids: Sequence[int]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(ids), QUERY_CHUNK):
            chunk = ", ".join(str(int(i)) for i in ids[start : start + QUERY_CHUNK])
            rows = self._client.query(
                self.collection, filter=f"{ID} in [{chunk}]", output_fields=[ID], consistency_level="Strong"
            )
            found.update(int(r[ID]) for r in rows)
        return found

    def settle(self) -> None:
        """After a bulk load: flush the inserts into sealed segments and wait until they are indexed."""
        if not self._unsettled:
            return
        self._client.flush(self.collection)
        self._wait_for_index()
        self._unsettled = False

    def _wait_for_index(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while True:
            info = self._client.describe_index(self.collection, VECTOR) or {}
            if not info.get("pending_index_rows") and str(info.get("state", "Finished")) in ("Finished", "3"):
                return
            if str(info.get("state")) == "Failed":
                raise SimlibError(f"Milvus failed to build the index: {info.get('index_state_fail_reason', '')}")
            if time.monotonic() > deadline:
                raise SimlibError(f"the Milvus index build did not finish within {timeout:.0f} s")
            time.sleep(0.5)

    # ------------------------------------------------------------------ reading
    def _count(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def __len__(self) -> int:
        return self._count()

    def __contains__(self, id_: int) -> bool:
        return bool(self._existing([int(id_)]))

    @property
    def ids(self) -> np.ndarray:
        """Ids of the stored vectors, ascending."""
        return np.asarray(sorted(r.id for r in self._iter_records([ID])), np.int64)

    def _record(self, row: Mapping[str, Any]) -> Record:
        attrs = {name: row[f] for name, f in self.fields.items() if name != LABEL and row.get(f)}
        return Record(int(row[ID]), row.get(PATH) or None, row.get(LABEL) or None, attrs)

    def _output_fields(self) -> list[str]:
        return [ID, PATH, *self.fields.values()]

    def _remember(self, record: Record) -> None:
        self._cache[record.id] = record
        self._cache.move_to_end(record.id)
        while len(self._cache) > RECORD_CACHE:
            self._cache.popitem(last=False)

    def record(self, id_: int) -> Record:
        """The record stored for ``id_`` (served from the last searches' results when it can)."""
        cached = self._cache.get(int(id_))
        if cached is not None:
            return cached
        expr = f"{ID} == {int(id_)}"
        rows = self._client.query(
            self.collection, filter=expr, output_fields=self._output_fields(), consistency_level=SEARCH_CONSISTENCY
        )
        if not rows:
            raise SimlibError(f"id {id_} is not in the index")
        return self._record(rows[0])

    def _iter_records(self, output_fields: list[str] | None = None, expr: str = "") -> Iterator[Record]:
        it = self._client.query_iterator(
            self.collection,
            batch_size=QUERY_CHUNK,
            filter=expr,
            output_fields=output_fields or self._output_fields(),
            consistency_level=SEARCH_CONSISTENCY,
        )
        try:
            while batch := it.next():
                for row in batch:
                    yield self._record(row)
        finally:
            it.close()

    def records(self) -> list[Record]:
        """All records, by ascending id (streams through the collection: slow for huge galleries)."""
        return sorted(self._iter_records(), key=lambda r: r.id)

    def vectors_of(self, ids: Sequence[int]) -> np.ndarray:
        """The stored (unit) vectors of ``ids``, in that order."""
        ids = [int(i) for i in ids]
        found: dict[int, list[float]] = {}
        for start in range(0, len(ids), QUERY_CHUNK):
            chunk = ", ".join(str(i) for i in ids[start : start + QUERY_CHUNK])
            rows = self._client.query(
                self.collection,
                filter=f"{ID} in [{chunk}]",
                output_fields=[ID, VECTOR],
                consistency_level=SEARCH_CONSISTENCY,
            )
            found.update((int(r[ID]), r[VECTOR]) for r in rows)
        missing = [i for i in ids if i not in found]
        if missing:
            raise SimlibError(f"ids not in the index: {missing[:5]}")
        return np.asarray([found[i] for i in ids], np.float32).reshape(len(ids), self.dim)

    def ids_with_path(self, path: str) -> list[int]:
        """Ids of the records whose path is ``path`` (one filtered query, not a scan)."""
        return [r.id for r in self._iter_records([ID, PATH], f"{PATH} == {quote(path)}")]

    def attribute_values(self, max_values: int = MAX_FILTER_VALUES) -> dict[str, list[str]]:
        """Distinct values per attribute (and "label"), streamed once and cached until the count changes."""
        count = self._count()
        if self._values_cache and self._values_cache[:2] == (count, max_values):
            return self._values_cache[2]
        result = distinct_values(self._iter_records(), max_values)
        self._values_cache = (count, max_values, result)
        return result

    def search(
        self,
        queries: np.ndarray,
        k: int,
        filters: Filters | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine similarity among stored (and, with ``filters``, matching) vectors.

        Same contract as :meth:`simlib.index.VectorIndex.search`: ``(scores, ids)``, both (q, k),
        best first, padded with score ``-inf`` and id ``-1``.
        """
        x = normalized(queries, self.dim)
        if k < 1:
            raise SimlibError(f"k must be at least 1, not {k}")
        scores = np.full((len(x), k), -np.inf, np.float32)
        ids = np.full((len(x), k), -1, np.int64)
        expr = filter_expression(filters, self.fields)
        if len(x) == 0 or expr == f"{ID} < 0":
            return scores, ids
        c = self.config
        params: dict[str, Any] = {}
        if self.kind == "hnsw":
            params = {"ef": max(c.hnsw_ef_search, k)}
        elif self.kind == "ivfpq":
            params = {"nprobe": c.nprobe(self._nlist())}
        results = self._client.search(
            self.collection,
            data=x.tolist(),
            limit=k,
            filter=expr or "",
            output_fields=self._output_fields(),
            search_params={"metric_type": "COSINE", "params": params},
            consistency_level=SEARCH_CONSISTENCY,
        )
        for qi, hits in enumerate(results):
            for j, hit in enumerate(list(hits)[:k]):
                entity = dict(hit.get("entity") or {})
                entity[ID] = hit[ID]
                self._remember(self._record(entity))
                scores[qi, j] = float(hit["distance"])
                ids[qi, j] = int(hit[ID])
        return scores, ids

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike, write_extra: Callable[[Path], None] | None = None) -> Path:
        """Make the collection durable (flush, index, load) and write the manifest folder atomically."""
        import pymilvus  # lazy: pymilvus

        self.settle()
        directory = Path(directory)
        manifest = self._saved_manifest(
            uri=self.uri,
            collection=self.collection,
            attribute_fields=dict(self.fields),
            pymilvus_version=pymilvus.__version__,
            milvus_index_type=INDEX_TYPES[self.kind],
            metric="cosine (COSINE metric)",
        )
        with atomic_dir(directory) as tmp:
            save_json(tmp / MANIFEST_FILE, manifest.to_dict())
            if write_extra is not None:
                write_extra(tmp)
        self.manifest = manifest
        return directory

    @classmethod
    def open(cls, directory: str | os.PathLike, uri: str | None = None, token: str | None = None) -> MilvusIndex:
        """Reconnect to the collection named by an index folder's manifest.

        Args:
            directory: the index folder.
            uri: another address of the same collection (e.g. a cluster's), instead of the manifest's.
            token: overrides ``$MILVUS_TOKEN``.
        """
        directory = Path(directory)
        return cls._open(directory, read_manifest(directory), uri, token)

    @classmethod
    def open_folder(
        cls, directory: Path, manifest: IndexManifest, *, uri: str | None = None, mmap: bool = False
    ) -> MilvusIndex:
        """:meth:`open` as the registry calls it, with the manifest already read."""
        if mmap:
            raise SimlibError(f"{directory} is a Milvus index: memory-mapping (--mmap) applies to FAISS indexes only")
        return cls._open(directory, manifest, uri, None)

    @classmethod
    def _open(cls, directory: Path, manifest: IndexManifest, uri: str | None, token: str | None) -> MilvusIndex:
        if manifest.backend != cls.backend:
            raise SimlibError(f"{directory} is a {manifest.backend} index, not a Milvus one")
        if not (uri or manifest.uri) or not manifest.collection:
            raise SimlibError(f"{directory / MANIFEST_FILE} names no Milvus uri or collection; rebuild the index")
        uri = public_uri(uri or manifest.uri)  # type: ignore[arg-type]
        if is_lite(uri) and not Path(uri).exists():
            raise SimlibError(f"the Milvus Lite file {uri} of index {directory} is gone: rebuild the index")
        client = connect(uri, token)
        collection = manifest.collection
        if not client.has_collection(collection):
            client.close()
            raise SimlibError(f"collection {collection!r} is not in Milvus at {uri}: rebuild the index")
        dim = manifest.dimension
        schema = client.describe_collection(collection)
        have = next((f.get("params", {}).get("dim") for f in schema["fields"] if f["name"] == VECTOR), None)
        if have is None or int(have) != dim:
            client.close()
            raise SimlibError(f"collection {collection!r} holds {have}-d vectors, the manifest says {dim}: rebuild")
        client.load_collection(collection)
        index = cls(client, uri, collection, dim, manifest.index_config, dict(manifest.attribute_fields), manifest.kind)
        index.manifest = manifest
        return index

    def close(self) -> None:
        """Close the connection (and stop the in-process Milvus Lite server, releasing its file)."""
        if self._closed:
            return
        self._closed = True
        self._client.close()
        if is_lite(self.uri):
            from milvus_lite.server_manager import server_manager_instance  # lazy: Milvus Lite

            server_manager_instance.release_server(self.uri)

    def drop(self) -> None:
        """Delete the collection and everything in it (reconnecting if closed)."""
        client = connect(self.uri) if self._closed else self._client
        client.drop_collection(self.collection)
        if client is not self._client:
            client.close()
