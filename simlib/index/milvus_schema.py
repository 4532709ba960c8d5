"""The Milvus collection simlib writes: its schema and field names, filter expressions, uris and connecting.

A collection holds ``id`` (INT64 primary key), ``embedding`` (FLOAT_VECTOR, COSINE), ``path``,
``label`` and one VARCHAR field per record attribute (:func:`attribute_fields`), so filters run inside
Milvus. Filters become Milvus boolean expressions built only from field names of the schema and
quoted, escaped string literals (:func:`quote`, :func:`filter_expression`): a crafted value cannot
change the expression. Used by :class:`simlib.index.milvus.MilvusIndex`; pymilvus loads only when a
collection is reached.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from simlib.config import IndexConfig
from simlib.errors import SimlibError
from simlib.index.base import Filters

TOKEN_ENV = "MILVUS_TOKEN"
DEFAULT_COLLECTION = "simlib_gallery"
ID, VECTOR, PATH, LABEL = "id", "embedding", "path", "label"
MAX_PATH = 4096
MAX_VALUE = 1024
INDEX_TYPES = {"flat": "FLAT", "hnsw": "HNSW", "ivfpq": "IVF_FLAT"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


# ----------------------------------------------------------------------------- expressions
def quote(value: Any) -> str:
    """A Milvus string literal for ``value``: double-quoted, backslash and quotes escaped.

    Raises:
        SimlibError: for control characters other than tab, newline and carriage return,
            which Milvus string literals cannot carry.
    """
    text = str(value)
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in text):
        raise SimlibError(f"filter value {text!r} contains control characters: remove them")
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in text) + '"'


def filter_expression(filters: Filters | None, fields: Mapping[str, str]) -> str | None:
    """The Milvus boolean expression for ``filters``, or None when nothing is filtered.

    Args:
        filters: attribute (or "label") -> allowed value or values; all must match.
        fields: filterable name -> schema field name (names outside it match nothing, as in FAISS).

    Returns:
        ``'f1 in ["a", "b"] and f2 in ["c"]'``; ``"id < 0"`` (matches nothing) for an unknown name.
    """
    parts = []
    for key, want in (filters or {}).items():
        values = [want] if isinstance(want, str) else list(want)
        if not values:
            continue
        field = fields.get(key)
        if field is None:
            return f"{ID} < 0"
        parts.append(f"{field} in [{', '.join(quote(v) for v in values)}]")
    return " and ".join(parts) or None


def attribute_fields(names: Sequence[str]) -> dict[str, str]:
    """Schema field names for attribute names: ``attr_<name>``, sanitised and unique."""
    fields: dict[str, str] = {LABEL: LABEL}
    used = {ID, VECTOR, PATH, LABEL}
    for name in sorted(set(names)):
        if name in fields:
            continue
        base = "attr_" + re.sub(r"[^A-Za-z0-9_]", "_", name)[:200]
        field, n = base, 1
        while field in used:
            n += 1
            field = f"{base}_{n}"
        used.add(field)
        fields[name] = field
    return fields


def public_uri(uri: str) -> str:
    """``uri`` as stored in a manifest: local Lite paths made absolute; credentials refused."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https", "tcp", "unix"):
        if parts.username or parts.password:
            raise SimlibError(f"put Milvus credentials in ${TOKEN_ENV} (user:password or API key), not in the uri")
        return uri
    if parts.scheme:
        raise SimlibError(f"Milvus uri {uri!r}: use a local path ending in .db (Milvus Lite) or http://host:19530")
    if not uri.endswith(".db"):
        raise SimlibError(f"a Milvus Lite uri is a path ending in .db, not {uri!r}")
    return str(Path(uri).expanduser().resolve())


def is_lite(uri: str) -> bool:
    return not urlsplit(uri).scheme


def connect(uri: str, token: str | None = None):
    """A ``MilvusClient`` at ``uri`` (the token from ``$MILVUS_TOKEN`` unless given), with a clear error."""
    from pymilvus import MilvusClient  # lazy: pymilvus

    if is_lite(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    try:
        return MilvusClient(uri=uri, token=token)
    except Exception as e:
        hint = (
            " (Milvus Lite lets one process open a .db at a time: close the other one, or use a Milvus server)"
            if is_lite(uri)
            else f" (is the server running? is ${TOKEN_ENV} set when it needs one?)"
        )
        raise SimlibError(f"could not connect to Milvus at {uri}: {str(e)[:200]}{hint}") from None


def default_nlist(n: int) -> int:
    """IVF cells for a collection of about ``n`` vectors."""
    return max(8, int(4 * np.sqrt(max(n, 1))))


def create_collection(
    client, collection: str, dim: int, fields: Mapping[str, str], kind: str, config: IndexConfig, expected_count: int
) -> dict[str, Any]:
    """Create (replacing one of that name) and load a collection of simlib's schema; returns its index parameters.

    Args:
        client: a connected ``MilvusClient``.
        collection: the collection name (checked by the caller).
        dim: vector dimension.
        fields: attribute (and "label") -> schema field name (:func:`attribute_fields`).
        kind: the resolved index kind ("flat", "hnsw", "ivfpq").
        config: the index parameters.
        expected_count: how many vectors the bulk load will bring (IVF cells are sized by it).
    """
    from pymilvus import DataType, MilvusClient  # lazy: pymilvus

    if client.has_collection(collection):
        client.drop_collection(collection)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(ID, DataType.INT64, is_primary=True)
    schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=int(dim))
    schema.add_field(PATH, DataType.VARCHAR, max_length=MAX_PATH)
    for field in fields.values():
        schema.add_field(field, DataType.VARCHAR, max_length=MAX_VALUE)
    params: dict[str, Any] = {}
    if kind == "hnsw":
        params = {"M": config.hnsw_m, "efConstruction": config.hnsw_ef_construction}
    elif kind == "ivfpq":
        params = {"nlist": config.ivf_nlist or default_nlist(expected_count)}
    index_params = client.prepare_index_params()
    index_params.add_index(field_name=VECTOR, index_type=INDEX_TYPES[kind], metric_type="COSINE", params=params)
    client.create_collection(collection, schema=schema, index_params=index_params, consistency_level="Strong")
    client.load_collection(collection)
    return params
