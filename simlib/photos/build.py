"""Index a photo folder of any size, resumably.

:func:`index_folder` scans the folder (:func:`simlib.data.scan.scan_folder`), decodes the images in
a pool of threads while the model embeds the previous batch (:func:`simlib.data.pipeline.decode_batches`),
and writes the embeddings to disk chunk by chunk (:class:`simlib.photos.store.ChunkStore`) as they
are computed. A run killed at any point (kill -9 included) and started again reads the chunks
already written and embeds only the rest; batches are cut at the same rows in both runs, so the
index it ends with has the same ids and the same vectors as an uninterrupted run. Memory holds a
few batches while embedding; the vectors are gathered only to build the index at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from simlib.config import IndexConfig
from simlib.data.pipeline import DecodeErrors, decode_batches
from simlib.data.scan import FolderScan, scan_folder
from simlib.data.table import ImageTable
from simlib.errors import SimlibError
from simlib.photos.store import Chunk, ChunkStore, FileState, FolderState, work_dir
from simlib.search.searcher import Searcher
from simlib.search.tables import table_records
from simlib.storage import _pause_point

DEFAULT_CHUNK = 1024  # images per chunk on disk (a multiple of the batch size)


@dataclasses.dataclass(frozen=True)
class BuildReport:
    """What :func:`index_folder` did.

    Attributes:
        index_dir: the index folder written.
        indexed: images in the index.
        skipped: path -> reason, for every entry of the folder left out (scan and decoding).
        resumed: images whose embeddings came from an earlier, interrupted run.
        embedded: images embedded by this run.
        seconds: wall time.
    """

    index_dir: Path
    indexed: int
    skipped: dict[str, str]
    resumed: int
    embedded: int
    seconds: float


def folder_table(scan: FolderScan) -> ImageTable:
    """The scan as a table: ids 0..n-1 in scan order; labels only in the class-folder layout.

    Labels are the parent folder's name when every image sits directly in a first-level sub-folder
    (``root/<class>/<image>``): the rule :meth:`simlib.search.Searcher.add_images` applies to images
    added later, so a synced gallery keeps one labelling. Any other layout (dated, nested folders)
    has no labels.
    """
    table = scan.table()
    layout = bool(scan.files) and all(len(Path(f.rel).parts) == 2 for f in scan.files)
    return table if layout else dataclasses.replace(table, labels=None, name=f"image folder {scan.root} (no labels)")


def run_key(embedder, table: ImageTable, scan: FolderScan, batch_size: int, chunk_size: int) -> str:
    """What a run's chunks depend on: the model, how batches are cut, and every file's path, size and time."""
    h = hashlib.blake2b(digest_size=12)
    cfg = embedder.config
    h.update(json.dumps([embedder.fingerprint, cfg.image_size, cfg.resize, batch_size, chunk_size]).encode())
    for f in scan.files:
        h.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def index_folder(
    embedder,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: IndexConfig | None = None,
    batch_size: int = 32,
    chunk_size: int = DEFAULT_CHUNK,
    workers: int | None = None,
    progress: bool | str = True,
) -> BuildReport:
    """Embed every image under ``data`` into a new index folder ``out``, resuming an interrupted run.

    Args:
        embedder: the model (an :class:`~simlib.model.Embedder`).
        data: the photo folder (nested folders, links, junk: see :func:`~simlib.data.scan.scan_folder`).
        out: the index folder to write (replaced atomically when done).
        config: the index settings (default: ``auto``, exact up to 100k images, HNSW above).
        batch_size: images per forward pass.
        chunk_size: images per chunk on disk (rounded up to a multiple of ``batch_size``).
        workers: decoding threads (default: every core).
        progress: a progress bar with count, rate and ETA (a string sets its label).

    Returns:
        A :class:`BuildReport`.
    """
    t0 = time.perf_counter()
    out = Path(out).expanduser().absolute()
    work = work_dir(out)
    scan = scan_folder(data, exclude=(str(out), str(work)))
    if not scan.files:
        raise SimlibError(f"no images found under {data}: point --data at a folder of images")
    table = folder_table(scan)
    chunk_size = max(batch_size, -(-chunk_size // batch_size) * batch_size)
    store = ChunkStore(work, run_key(embedder, table, scan, batch_size, chunk_size)).open()
    n = len(table)
    n_chunks = -(-n // chunk_size)
    done = store.done() & set(range(n_chunks))
    missing = [c for c in range(n_chunks) if c not in done]
    resumed = sum(min(chunk_size, n - c * chunk_size) for c in done)
    rows = [r for c in missing for r in range(c * chunk_size, min(n, (c + 1) * chunk_size))]
    _embed_chunks(embedder, table, store, rows, resumed, chunk_size, batch_size, workers, progress)
    ok, vectors, digest_of, reasons = _assembled(store, n, n_chunks)
    searcher = Searcher.from_vectors(
        embedder,
        vectors,
        table_records(table, np.flatnonzero(ok)),
        config,
        data=table.name,
        next_id=n,
        skipped_paths=tuple(table.paths[r] for r in sorted(reasons)),
    )
    _pause_point("photos-before-save")
    saved = searcher.save(out)
    files = {
        f.path: FileState(f.path, f.size, f.mtime_ns, digest_of[r] or None, None if r in reasons else r, reasons.get(r))
        for r, f in enumerate(scan.files)
    }
    _pause_point("photos-before-state")
    FolderState(root=scan.root, files=files).save(work)
    store.remove()
    skipped = {**scan.skipped, **{table.paths[r]: why for r, why in sorted(reasons.items())}}
    return BuildReport(saved, int(ok.sum()), skipped, resumed, len(rows), time.perf_counter() - t0)


def _embed_chunks(embedder, table, store, rows, resumed: int, chunk_size: int, batch_size: int, workers, progress):
    """Decode and embed ``rows`` batch by batch, writing each finished chunk whole (a progress bar with count,
    rate and ETA); a run killed meanwhile keeps the chunks written."""
    from tqdm.auto import tqdm  # lazy: only when indexing

    n = len(table)
    desc = progress if isinstance(progress, str) else "indexing"
    errors, digests = DecodeErrors(), {}
    size, mode = embedder.config.image_size, embedder.config.resize
    with tqdm(total=n, initial=resumed, desc=desc, unit="img", disable=not progress, smoothing=0.05) as bar:
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, ok, vectors) of the open chunk
        for images, batch_rows, ok in decode_batches(
            table, size, mode, batch_size, rows=rows, workers=workers, errors=errors, digests=digests
        ):
            vectors = embedder.embed_batch(images[ok]) if ok.any() else np.zeros((0, embedder.dim), np.float32)
            pending.append((batch_rows, ok, vectors))
            bar.update(len(batch_rows))
            chunk_no = int(batch_rows[0]) // chunk_size
            if int(batch_rows[-1]) == min(n, (chunk_no + 1) * chunk_size) - 1:  # the chunk's last batch: write it
                chunk_rows = np.concatenate([r for r, _, _ in pending])
                chunk = Chunk(
                    rows=chunk_rows,
                    ok=np.concatenate([o for _, o, _ in pending]),
                    vectors=np.concatenate([v for _, _, v in pending]),
                    digests=tuple(digests.pop(int(r), "") for r in chunk_rows),
                    reasons={int(r): errors.reasons.pop(int(r)) for r in chunk_rows if int(r) in errors.reasons},
                )
                store.write(chunk_no, chunk)
                pending.clear()
                _pause_point(f"photos-chunk-{chunk_no}")


def _assembled(store, n: int, n_chunks: int):
    """Every chunk read back, checked to cover the folder once: ``(ok, vectors, digests, reasons)``."""
    chunks = store.read_all(range(n_chunks))
    all_rows = np.concatenate([c.rows for c in chunks])
    if not np.array_equal(all_rows, np.arange(n)):
        raise SimlibError(f"the chunks in {store.folder} do not cover the folder: delete that folder and index again")
    ok = np.concatenate([c.ok for c in chunks])
    reasons = {r: why for c in chunks for r, why in c.reasons.items()}
    if not ok.any():
        raise SimlibError(f"none of the {n} images could be read; first error: {next(iter(reasons.values()), 'none')}")
    return ok, np.concatenate([c.vectors for c in chunks]), [d for c in chunks for d in c.digests], reasons
