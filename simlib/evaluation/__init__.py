"""Scoring retrieval: metrics on exact neighbours and the protocol that compares methods on held-out splits.

- :mod:`simlib.evaluation.metrics`: :func:`knn`, Recall@K, Precision@K, mAP@R, :func:`evaluate`.
- :mod:`simlib.evaluation.protocol`: :func:`compare` (pixels / untrained / trained on image- and
  class-disjoint splits and near-duplicates), its table and result files.
"""

from simlib.evaluation.metrics import evaluate, knn, map_at_r, precision_at_k, recall_at_k
from simlib.evaluation.protocol import (
    COLUMNS,
    PIXEL_SIZE,
    RESULTS_CSV,
    RESULTS_JSON,
    class_retrieval,
    compare,
    format_table,
    machine,
    model_embedder,
    near_duplicate_queries,
    near_duplicate_retrieval,
    pixel_embeddings,
    save_results,
)

__all__ = [
    "COLUMNS",
    "PIXEL_SIZE",
    "RESULTS_CSV",
    "RESULTS_JSON",
    "class_retrieval",
    "compare",
    "evaluate",
    "format_table",
    "knn",
    "machine",
    "map_at_r",
    "model_embedder",
    "near_duplicate_queries",
    "near_duplicate_retrieval",
    "pixel_embeddings",
    "precision_at_k",
    "recall_at_k",
    "save_results",
]
