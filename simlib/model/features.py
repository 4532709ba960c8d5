"""Pooled backbone features, computed once per image and backbone: a cache in memory and on disk.

A frozen backbone gives the same pooled features for the same image every time, yet the course (and
``compare``) pushed the same images through ResNet50 again and again: the baselines, the head before
training, each training run and each evaluation. :class:`FeatureCache` keeps each image's pooled
features under

- the **backbone's identity** (:func:`backbone_key`): a hash of the backbone's weights, the image size,
  the stage it stops at, the pooling (kind and grid) and the compute precision;
- the **image's content**: a hash of its pixels (dtype and shape included), so a subset, a reordering or
  another split of images already seen costs nothing, and a different image never hits.

On disk each computed batch is one raw ``.feat`` shard under ``<folder>/<backbone key>/``, written to a
temporary name and renamed into place (atomic), with a checksum of its content: a shard that is partial,
corrupt or unreadable is ignored (its images are computed again). Nothing is cached unless a cache is
switched on (:func:`use_feature_cache`, which the course does under its artifacts folder); without one,
:func:`pooled_features` computes as before.

The backbone's weights must not change while its :class:`~simlib.model.Embedder` is in use (fine-tuning
builds a new embedder); the key is computed once per embedder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

SHARD_SUFFIX = ".feat"
_MAGIC = b"SIMLIBF1"  # then n and dim (uint64), the digests, the float32 features, the checksum
_DIGEST_BYTES = 16
_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # embedder -> backbone key
_POOL_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # embedder -> compiled pooling fn
_REST_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # embedder -> compiled head rest
_ACTIVE: FeatureCache | None = None


def image_digests(images: np.ndarray) -> list[bytes]:
    """One content hash per image (its dtype, shape and pixels)."""
    arr = np.ascontiguousarray(images)
    head = f"{arr.dtype.str}{arr.shape[1:]}".encode()
    return [hashlib.blake2b(head + row.tobytes(), digest_size=_DIGEST_BYTES).digest() for row in arr]


def backbone_key(embedder: Any) -> str:
    """The identity of ``embedder``'s pooled backbone features: its backbone weights, image size, stage,
    pooling and precision (the head's own layers do not matter). Computed once per embedder."""
    key = _KEYS.get(embedder)
    if key is None:
        c = embedder.config
        h = hashlib.blake2b(digest_size=12)
        fields = (c.backbone, c.image_size, c.feature_stage, c.pooling, c.grid_size, c.precision)
        h.update(repr(fields).encode())
        for w in embedder.backbone.weights:
            h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
        key = h.hexdigest()
        _KEYS[embedder] = key
    return key


class FeatureCache:
    """Pooled features by backbone key and image content, in memory and (with ``folder``) on disk.

    Args:
        folder: where the shards go (``<folder>/<backbone key>/*.feat``); None keeps them in memory only.

    Attributes:
        hits: images served from the cache so far.
        misses: images computed so far.
    """

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self._rows: dict[str, dict[bytes, np.ndarray]] = {}
        self._read: dict[str, set[str]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: str, images: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The features of ``images`` under ``key``; ``compute`` runs on the images not cached yet (once
        per distinct image), and its rows are kept (and written as one shard)."""
        digests = image_digests(images)
        rows = self._load(key)
        missing: dict[bytes, int] = {}
        for i, d in enumerate(digests):
            if d not in rows and d not in missing:
                missing[d] = i
        if missing:
            new = np.asarray(compute(np.asarray(images)[list(missing.values())]), np.float32)
            self._write(key, list(missing), new)
            rows.update(zip(missing, new, strict=True))
        self.misses += len(missing)
        self.hits += len(digests) - len(missing)
        if not digests:
            return np.zeros((0, 0), np.float32)
        return np.stack([rows[d] for d in digests])

    def _load(self, key: str) -> dict[bytes, np.ndarray]:
        """The rows of ``key``, reading the shards on disk not read yet (another process may add some)."""
        rows = self._rows.setdefault(key, {})
        if self.folder is None:
            return rows
        done = self._read.setdefault(key, set())
        folder = self.folder / key
        names = sorted(p.name for p in folder.glob("*" + SHARD_SUFFIX)) if folder.is_dir() else []
        for name in names:
            if name in done:
                continue
            done.add(name)
            shard = read_shard(folder / name)
            if shard is not None:
                rows.update(zip(shard[0], shard[1], strict=True))
        return rows

    def _write(self, key: str, digests: list[bytes], features: np.ndarray) -> None:
        if self.folder is None:
            return
        folder = self.folder / key
        folder.mkdir(parents=True, exist_ok=True)
        path = write_shard(folder, digests, features)
        self._read.setdefault(key, set()).add(path.name)


def _checksum(digests: bytes | memoryview, features: bytes | memoryview) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(digests)
    h.update(features)
    return h.digest()


def write_shard(folder: Path, digests: list[bytes], features: np.ndarray) -> Path:
    """Write one shard atomically: a temporary file in ``folder``, flushed, then renamed to its final name.

    The file is raw (a magic, ``n`` and ``dim``, the digests, the float32 features, a checksum of both), so
    reading it back is one read, not an archive to unpack.
    """
    d = b"".join(digests)
    f = np.ascontiguousarray(features, np.float32).reshape(len(digests), -1)
    check = _checksum(d, memoryview(f).cast("B"))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(_MAGIC + np.asarray([len(digests), f.shape[1]], "<u8").tobytes())
            out.write(d)
            out.write(memoryview(f).cast("B"))
            out.write(check)
            out.flush()
            os.fsync(out.fileno())
        final = folder / (check.hex() + SHARD_SUFFIX)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def read_shard(path: Path) -> tuple[list[bytes], np.ndarray] | None:
    """A shard's ``(digests, features)``, or None when it is unreadable, partial or fails its checksum."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return None
    head = len(_MAGIC) + 16
    if len(raw) < head + 16 or not raw.startswith(_MAGIC):
        return None
    n, dim = (int(v) for v in np.frombuffer(raw, "<u8", 2, len(_MAGIC)))
    size_d, size_f = n * _DIGEST_BYTES, n * dim * 4
    if len(raw) != head + size_d + size_f + 16:
        return None
    view = memoryview(raw)
    d, f = view[head : head + size_d], view[head + size_d : head + size_d + size_f]
    if _checksum(d, f) != raw[-16:]:
        return None
    digests = [bytes(d[i : i + _DIGEST_BYTES]) for i in range(0, size_d, _DIGEST_BYTES)]
    return digests, np.frombuffer(f, np.float32).reshape(n, dim)


def use_feature_cache(folder: str | os.PathLike | None = None, *, memory_only: bool = False) -> FeatureCache:
    """Switch the process-wide cache on (``folder`` on disk, or ``memory_only``) and return it.

    Calling it again with the same folder keeps the cache and what it holds.
    """
    global _ACTIVE
    target = None if memory_only or folder is None else Path(folder)
    if _ACTIVE is None or _ACTIVE.folder != target:
        _ACTIVE = FeatureCache(target)
    return _ACTIVE


def disable_feature_cache() -> None:
    """Switch the process-wide cache off (features are computed every time again)."""
    global _ACTIVE
    _ACTIVE = None


@contextlib.contextmanager
def cache_while() -> Iterator[FeatureCache]:
    """The process-wide cache for the duration of a ``with`` block: the one switched on, else a memory-only
    one that is dropped afterwards (``compare`` scores the same images in several parts with it)."""
    global _ACTIVE
    if _ACTIVE is not None:
        yield _ACTIVE
        return
    _ACTIVE = FeatureCache(None)
    try:
        yield _ACTIVE
    finally:
        _ACTIVE = None


def active_cache() -> FeatureCache | None:
    """The process-wide cache, or None when none is switched on."""
    return _ACTIVE


def pooled_features_fn(embedder: Any) -> Callable[[Any], Any]:
    """A compiled function from images (uint8 or float) to ``embedder``'s pooled backbone features."""
    fn = _POOL_FNS.get(embedder)
    if fn is None:
        import tensorflow as tf

        from simlib.model.network import split_head

        pool, _ = split_head(embedder.head)
        backbone = embedder.backbone

        @tf.function(reduce_retracing=True)
        def fn(x):
            return pool(backbone(tf.cast(x, tf.float32), training=False), training=False)

        _POOL_FNS[embedder] = fn
    return fn


def batched(fn: Callable[[Any], Any], images: np.ndarray, batch: int = 64, progress: bool | str = False) -> np.ndarray:
    """``fn`` over ``images`` in batches, concatenated as float32."""
    from tqdm.auto import tqdm

    starts = range(0, len(images), batch)
    desc = progress if isinstance(progress, str) else None
    bar = tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False)
    return np.concatenate([np.asarray(fn(images[i : i + batch]), np.float32) for i in bar])


def pooled_features(
    embedder: Any, images: np.ndarray, progress: bool | str = False, cache: FeatureCache | None = None
) -> np.ndarray:
    """``embedder``'s pooled backbone features of ``images``, from ``cache`` (default: the process-wide
    one, if any) for the images it holds, computed for the others.

    Args:
        embedder: an :class:`~simlib.model.Embedder` (its backbone and the head's pooling are used).
        images: (N, S, S, 3) images at the embedder's size.
        progress: a progress bar (its label, when a string) while features are computed.
        cache: the cache to use; None: :func:`active_cache`.
    """
    cache = cache if cache is not None else _ACTIVE
    fn = pooled_features_fn(embedder)
    if cache is None:
        return batched(fn, images, progress=progress) if len(images) else np.zeros((0, 0), np.float32)
    return cache.get(backbone_key(embedder), images, lambda todo: batched(fn, todo, progress=progress))


def head_rest_fn(embedder: Any) -> Callable[[Any], Any]:
    """A compiled function from pooled features to ``embedder``'s embeddings (the head after pooling)."""
    fn = _REST_FNS.get(embedder)
    if fn is None:
        import tensorflow as tf

        from simlib.model.network import split_head

        _, rest = split_head(embedder.head)
        fn = tf.function(lambda f: rest(f, training=False), reduce_retracing=True)
        _REST_FNS[embedder] = fn
    return fn


def embed_images_cached(embedder: Any, images: np.ndarray, progress: bool | str = False) -> np.ndarray:
    """``embedder``'s embeddings of uint8 ``images``: cached pooled features, then the rest of the head.

    Without an active cache this is ``embedder.embed_batch`` in batches (the usual path).
    """
    if len(images) == 0:
        return np.zeros((0, embedder.dim), np.float32)
    if _ACTIVE is None:
        return np.concatenate([embedder.embed_batch(images[i : i + 128]) for i in range(0, len(images), 128)])
    feats = pooled_features(embedder, images, progress=progress)
    rest = head_rest_fn(embedder)
    return np.concatenate([np.asarray(rest(feats[i : i + 512]), np.float32) for i in range(0, len(feats), 512)])
