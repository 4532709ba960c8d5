"""Scoring retrieval: metrics on exact neighbours, the protocol that compares methods on held-out splits,
and whether a difference between two methods is a result.

- :mod:`simlib.evaluation.metrics`: :func:`knn`, Recall@K, Precision@K, mAP@R, :func:`evaluate`, and the
  per-query scores behind them (:func:`retrieval_scores`).
- :mod:`simlib.evaluation.stats`: paired bootstrap intervals, McNemar's exact test, a sign-flip test,
  :func:`verdict` ("beats" / "no detectable difference" / "worse", from the interval).
- :mod:`simlib.evaluation.baselines`: what a trained model is scored against (the backbone as it comes,
  the head before training).
- :mod:`simlib.evaluation.protocol`: :func:`compare` (pixels / backbone / head before training / trained on
  image- and class-disjoint splits and near-duplicates, every pair of methods with its interval), its
  tables and result files.
- :mod:`simlib.evaluation.claims`: sentences built from results, and the check of typed figures against them.
"""

from simlib.evaluation.baselines import HEAD_BEFORE_TRAINING, backbone_baseline, backbone_name, head_before_training
from simlib.evaluation.metrics import evaluate, knn, map_at_r, precision_at_k, recall_at_k, retrieval_scores
from simlib.evaluation.protocol import (
    COLUMNS,
    PIXEL_SIZE,
    RESULTS_CSV,
    RESULTS_JSON,
    Comparison,
    class_retrieval,
    compare,
    format_differences,
    format_table,
    machine,
    model_embedder,
    near_duplicate_queries,
    near_duplicate_retrieval,
    pixel_embeddings,
    save_results,
)
from simlib.evaluation.stats import (
    PairedDifference,
    mcnemar_exact,
    paired_bootstrap,
    paired_difference,
    sign_flip_test,
    verdict,
    verdict_phrase,
)

__all__ = [
    "COLUMNS",
    "HEAD_BEFORE_TRAINING",
    "PIXEL_SIZE",
    "RESULTS_CSV",
    "RESULTS_JSON",
    "Comparison",
    "PairedDifference",
    "backbone_baseline",
    "backbone_name",
    "class_retrieval",
    "compare",
    "evaluate",
    "format_differences",
    "format_table",
    "head_before_training",
    "knn",
    "machine",
    "map_at_r",
    "mcnemar_exact",
    "model_embedder",
    "near_duplicate_queries",
    "near_duplicate_retrieval",
    "paired_bootstrap",
    "paired_difference",
    "pixel_embeddings",
    "precision_at_k",
    "recall_at_k",
    "retrieval_scores",
    "save_results",
    "sign_flip_test",
    "verdict",
    "verdict_phrase",
]
