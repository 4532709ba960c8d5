"""Batched embedding of image tables through the parallel tf.data pipeline (see :class:`simlib.model.Embedder`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from simlib.config import ModelConfig
from simlib.data import DecodeErrors, ImageTable, image_pipeline

DEFAULT_BATCH_SIZE = 32


@dataclasses.dataclass(frozen=True)
class EmbedResult:
    """Embeddings of the rows that decoded, plus the reasons the others did not.

    Attributes:
        embeddings: float32 (n_ok, d), unit rows.
        rows: table row of each embedding.
        skipped: row -> reason, for rows that could not be decoded.
    """

    embeddings: np.ndarray
    rows: np.ndarray
    skipped: dict[int, str]


class BatchEmbedder(Protocol):
    """What batched embedding needs of a model (an :class:`~simlib.model.Embedder` is one)."""

    config: ModelConfig
    dim: int

    def embed_batch(self, images: np.ndarray) -> np.ndarray:
        """Unit vectors for a uint8 batch (B, S, S, 3) at the model's image size."""
        ...


def embed_table(
    embedder: BatchEmbedder,
    table: ImageTable,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rows: Iterable[int] | None = None,
    progress: bool | str = True,
) -> EmbedResult:
    """Embed every row of a table through the parallel tf.data pipeline.

    Args:
        embedder: the embedding model.
        table: the images.
        batch_size: images per forward pass.
        rows: only these rows (default: all).
        progress: show a progress bar (a string sets its description).

    Returns:
        An :class:`EmbedResult`; undecodable rows are skipped and listed with their reason.
    """
    errors = DecodeErrors()
    out_vecs, out_rows = [], []
    for vectors, batch_rows in embed_batches(
        embedder, table, batch_size=batch_size, rows=rows, progress=progress, errors=errors
    ):
        out_vecs.append(vectors)
        out_rows.append(batch_rows)
    d = embedder.dim
    return EmbedResult(
        embeddings=np.concatenate(out_vecs) if out_vecs else np.zeros((0, d), np.float32),
        rows=np.concatenate(out_rows) if out_rows else np.zeros((0,), np.int64),
        skipped=dict(sorted(errors.reasons.items())),
    )


def embed_batches(
    embedder: BatchEmbedder,
    table: ImageTable,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rows: Iterable[int] | None = None,
    progress: bool | str = True,
    errors: DecodeErrors | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream ``(embeddings, table rows)`` batch by batch, never holding the whole table's vectors.

    Rows that fail to decode are left out of the batches and recorded in ``errors``.
    """
    cfg = embedder.config
    rows = list(range(len(table))) if rows is None else list(rows)
    errors = errors if errors is not None else DecodeErrors()
    ds = image_pipeline(table, cfg.image_size, cfg.resize, batch_size, errors, rows)
    desc = progress if isinstance(progress, str) else "embedding"
    with tqdm(total=len(rows), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for images, batch_rows, ok in ds.as_numpy_iterator():
            if ok.any():
                yield embedder.embed_batch(images[ok]), batch_rows[ok]
            bar.update(len(batch_rows))
