"""The batched ``tf.data`` pipeline that embedding and training read images from."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

import numpy as np

from simlib.data.decode import prepare_image
from simlib.data.table import ImageTable
from simlib.errors import SimlibError


class DecodeErrors:
    """Thread-safe record of rows that failed to decode in a pipeline: row -> reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reasons: dict[int, str] = {}

    def add(self, row: int, reason: str) -> None:
        """Record that ``row`` failed for ``reason``."""
        with self._lock:
            self.reasons[row] = reason


def image_pipeline(
    table: ImageTable,
    size: int,
    mode: str = "pad",
    batch_size: int = 32,
    errors: DecodeErrors | None = None,
    rows: Iterable[int] | None = None,
):
    """A ``tf.data.Dataset`` of ``(images uint8 [B,S,S,3], rows int64 [B], ok bool [B])``.

    Images are decoded with Pillow one batch per call, in order, in the background while the
    consumer works on the previous batch. A row that fails to decode yields a white image with
    ``ok=False`` and its reason in ``errors``.
    """
    import tensorflow as tf

    errors = errors if errors is not None else DecodeErrors()
    row_array = np.arange(len(table), dtype=np.int64) if rows is None else np.asarray(list(rows), np.int64)

    def load(batch_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.full((len(batch_rows), size, size, 3), 255, np.uint8)
        ok = np.zeros(len(batch_rows), bool)
        for j, row in enumerate(batch_rows):
            r = int(row)
            try:
                images[j] = prepare_image(table.source(r), size, mode)
                ok[j] = True
            except SimlibError as e:
                errors.add(r, str(e))
            except Exception as e:  # never let one bad file stop a whole gallery
                errors.add(r, f"{type(e).__name__}: {e}")
        return images, ok

    @tf.autograph.experimental.do_not_convert  # plain TF calls: nothing for AutoGraph to convert
    def tf_load(batch_rows):
        images, ok = tf.numpy_function(load, [batch_rows], [tf.uint8, tf.bool], stateful=False)
        images.set_shape((None, size, size, 3))
        ok.set_shape((None,))
        return images, batch_rows, ok

    # Decoding costs 5-12 % of a ResNet50 forward (benchmarks/bench_embed.py), so one worker per
    # 8 cores keeps up with the model. More take cores from the model's own intra-op threads: on
    # 2 cores AUTOTUNE's per-image calls ran two decode threads and an autotuner beside them.
    workers = max(1, (os.cpu_count() or 1) // 8)
    options = tf.data.Options()
    options.threading.private_threadpool_size = workers
    options.autotune.enabled = False
    ds = tf.data.Dataset.from_tensor_slices(row_array).batch(batch_size)
    ds = ds.map(tf_load, num_parallel_calls=workers, deterministic=True)
    return ds.prefetch(workers + 1).with_options(options)


def load_images(table: ImageTable, size: int, resize: str = "pad", progress: bool | str = False) -> np.ndarray:
    """Decode every row of ``table`` into one uint8 (N, S, S, 3) array (parallel, in order).

    Raises:
        SimlibError: an image cannot be read (training data should be clean; ``simlib index``
            reports bad files by name).
    """
    from tqdm.auto import tqdm

    errors = DecodeErrors()
    out = np.empty((len(table), size, size, 3), np.uint8)
    desc = progress if isinstance(progress, str) else "decoding"
    with tqdm(total=len(table), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for images, rows, _ in image_pipeline(table, size, resize, 64, errors).as_numpy_iterator():
            out[rows] = images
            bar.update(len(rows))
    if errors.reasons:
        row, reason = next(iter(sorted(errors.reasons.items())))
        raise SimlibError(
            f"{len(errors.reasons)} training image(s) cannot be read, e.g. {table.source(row)}: {reason}; "
            "remove them from the training folder"
        )
    return out


def file_digest(data: bytes) -> str:
    """The content hash simlib records for an image file (BLAKE2b, 128 bits, hex)."""
    import hashlib

    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_image(source, size: int, mode: str = "pad", *, digest: bool = False) -> tuple[np.ndarray, str | None]:
    """One table source decoded and resized as indexing does it: ``(image uint8 [S,S,3], content hash or None)``.

    With ``digest``, a path is read once: its content hash (:func:`file_digest`) and the image come from the
    same bytes. Decoding is reduced for large images (:func:`simlib.data.prepare_image`).

    Raises:
        SimlibError: not an image, corrupt, too many pixels; OSError: the file cannot be read.
    """
    if digest and isinstance(source, str):
        with open(source, "rb") as f:
            data = f.read()
        return prepare_image(data, size, mode, name=source), file_digest(data)
    return prepare_image(source, size, mode), None


def decode_batches(
    table: ImageTable,
    size: int,
    mode: str = "pad",
    batch_size: int = 32,
    *,
    rows: Iterable[int] | None = None,
    workers: int | None = None,
    prefetch: int | None = None,
    errors: DecodeErrors | None = None,
    digests: dict[int, str] | None = None,
):
    """Decode ``rows`` of a path table in a pool of threads: yields ``(images, rows, ok)`` batches in order.

    For camera photos, whose decode (even at a reduced size, see :func:`simlib.data.prepare_image`)
    costs more than a 64 px forward pass: ``workers`` threads (default: every core) decode the next
    batches while the caller runs the model on this one; Pillow and the model both release the GIL.
    At most ``prefetch`` (default ``2 * workers``) batches are in flight, so memory stays a few batches.
    Each file is read once: with ``digests`` given, its content hash (:func:`file_digest`) is recorded
    there by row, and the image is decoded from the same bytes.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    errors = errors if errors is not None else DecodeErrors()
    row_list = list(range(len(table))) if rows is None else [int(r) for r in rows]
    workers = workers or max(1, os.cpu_count() or 1)
    prefetch = prefetch or 2 * workers
    lock = threading.Lock()

    def load(batch_rows: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        images = np.full((len(batch_rows), size, size, 3), 255, np.uint8)
        ok = np.zeros(len(batch_rows), bool)
        for j, r in enumerate(batch_rows):
            source = table.source(r)
            try:
                images[j], digest = read_image(source, size, mode, digest=digests is not None)
                if digest is not None:
                    with lock:
                        digests[r] = digest
                ok[j] = True
            except SimlibError as e:
                errors.add(r, str(e))
            except OSError as e:
                errors.add(r, f"{source}: cannot be read ({e.strerror or type(e).__name__})")
            except Exception as e:  # never let one bad file stop a whole gallery
                errors.add(r, f"{type(e).__name__}: {e}")
        return images, np.asarray(batch_rows, np.int64), ok

    batches = [row_list[i : i + batch_size] for i in range(0, len(row_list), batch_size)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="simlib-decode") as pool:
        pending: deque = deque()
        for b in batches:
            pending.append(pool.submit(load, b))
            if len(pending) > prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
