"""Retrieval metrics: Recall@K, Precision@K and mAP@R.

Conventions follow the metric-learning literature (Musgrave et al., "A Metric Learning
Reality Check"): Recall@K is the fraction of queries with at least one same-class item in
their top K; mAP@R averages precision over the first R results, R being the number of
same-class references. Neighbours come from exact FAISS search, never an N x N matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simlib.errors import SimlibError


def knn(
    query: np.ndarray,
    reference: np.ndarray,
    k: int,
    ref_includes_query: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` neighbours by inner product.

    Args:
        query: (q, d) float vectors.
        reference: (n, d) float vectors.
        k: neighbours per query.
        ref_includes_query: query ``i`` is reference ``i``; it is left out of its own results.

    Returns:
        ``(scores, indices)``, both (q, min(k, n - ref_includes_query)), best first.
    """
    from simlib.index.faiss import import_faiss

    faiss = import_faiss()

    query = np.ascontiguousarray(query, dtype=np.float32)
    reference = np.ascontiguousarray(reference, dtype=np.float32)
    if ref_includes_query and len(query) != len(reference):
        raise SimlibError("ref_includes_query needs the query set to be the reference set")
    k = min(k, len(reference) - int(ref_includes_query))
    if k < 1 or len(query) == 0:
        return np.zeros((len(query), 0), np.float32), np.zeros((len(query), 0), np.int64)
    index = faiss.IndexFlatIP(reference.shape[1])
    index.add(reference)
    fetch = k + int(ref_includes_query)
    scores, idx = index.search(query, fetch)
    if ref_includes_query:
        own = idx == np.arange(len(query))[:, None]
        # drop the query itself, or the last neighbour when ties pushed it out of the list
        own[~own.any(axis=1), -1] = True
        keep = ~own
        scores = scores[keep].reshape(len(query), k)
        idx = idx[keep].reshape(len(query), k)
    return scores, idx


def _relevance(query_labels: np.ndarray, neighbor_labels: np.ndarray) -> np.ndarray:
    return np.asarray(neighbor_labels) == np.asarray(query_labels)[:, None]


def recall_at_k(query_labels: np.ndarray, neighbor_labels: np.ndarray, k: int) -> float:
    """Fraction of queries with a same-label item among their first ``k`` neighbours."""
    rel = _relevance(query_labels, neighbor_labels)[:, :k]
    return float(rel.any(axis=1).mean()) if len(rel) else float("nan")


def precision_at_k(query_labels: np.ndarray, neighbor_labels: np.ndarray, k: int) -> float:
    """Mean fraction of same-label items among the first ``k`` neighbours."""
    rel = _relevance(query_labels, neighbor_labels)[:, :k]
    return float(rel.mean()) if rel.size else float("nan")


def map_at_r(query_labels: np.ndarray, neighbor_labels: np.ndarray, relevant_counts: np.ndarray) -> float:
    """Mean average precision at R.

    Args:
        query_labels: (q,) labels.
        neighbor_labels: (q, k) labels of the ranked neighbours, k >= max(relevant_counts).
        relevant_counts: (q,) R for each query: how many references share its label.
    """
    ap = average_precision_at_r(query_labels, neighbor_labels, relevant_counts)
    return float(ap.mean()) if len(ap) else float("nan")


def average_precision_at_r(
    query_labels: np.ndarray, neighbor_labels: np.ndarray, relevant_counts: np.ndarray
) -> np.ndarray:
    """Per-query average precision at R (:func:`map_at_r` is its mean)."""
    rel = _relevance(query_labels, neighbor_labels).astype(np.float64)
    r = np.asarray(relevant_counts)
    if len(r) == 0:
        return np.zeros(0)
    if rel.shape[1] < r.max():
        raise SimlibError(f"mAP@R needs {r.max()} neighbours per query, got {rel.shape[1]}")
    ranks = np.arange(1, rel.shape[1] + 1)
    precision = np.cumsum(rel, axis=1) / ranks
    within_r = ranks[None, :] <= r[:, None]
    return (precision * rel * within_r).sum(axis=1) / np.maximum(r, 1)


def retrieval_scores(
    query: np.ndarray,
    query_labels: Sequence | np.ndarray,
    reference: np.ndarray,
    reference_labels: Sequence | np.ndarray,
    ref_includes_query: bool,
    ks: Sequence[int] = (1, 5, 10),
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """:func:`evaluate`'s summary and the per-query scores it averages.

    Returns:
        ``(summary, per_query)``: ``per_query`` holds ``"query"`` (the indices of the queries scored:
        those with a same-label reference), ``"hit@1"`` (1.0 when the first neighbour shares the
        query's label; its mean is Recall@1) and ``"ap@r"`` (average precision at R; its mean is
        mAP@R), one entry per scored query, in query order. Two methods scored on the same queries
        give per-query scores that pair up (see :mod:`simlib.evaluation.stats`).
    """
    query_labels = np.asarray(query_labels, dtype=object)
    reference_labels = np.asarray(reference_labels, dtype=object)
    uniq, counts = np.unique(reference_labels, return_counts=True)
    per_label = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
    r = np.asarray([per_label.get(lab, 0) for lab in query_labels]) - int(ref_includes_query)
    valid = r > 0
    if not valid.any():
        raise SimlibError("no query has a same-label reference to find: check the labels and the split")
    k = int(max(max(ks), r.max()))
    _, idx = knn(query, reference, k, ref_includes_query)
    idx, ql, r = idx[valid], query_labels[valid], r[valid]
    nl = reference_labels[idx]
    ap = average_precision_at_r(ql, nl, r)
    out = {f"recall@{kk}": recall_at_k(ql, nl, kk) for kk in ks}
    out[f"precision@{max(ks)}"] = precision_at_k(ql, nl, max(ks))
    out["map@r"] = float(ap.mean())
    out["n_queries"] = int(valid.sum())
    per_query = {
        "query": np.flatnonzero(valid),
        "hit@1": _relevance(ql, nl)[:, 0].astype(np.float64),
        "ap@r": ap,
    }
    return out, per_query


def evaluate(
    query: np.ndarray,
    query_labels: Sequence | np.ndarray,
    reference: np.ndarray,
    reference_labels: Sequence | np.ndarray,
    ref_includes_query: bool,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K for each K, Precision@K for the largest, mAP@R and the query count.

    Queries with no same-label reference (nothing to find) are left out. The per-query scores
    behind these means: :func:`retrieval_scores`.
    """
    return retrieval_scores(query, query_labels, reference, reference_labels, ref_includes_query, ks)[0]
