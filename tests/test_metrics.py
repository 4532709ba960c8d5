import itertools

import numpy as np
import pytest

from simlib.evaluation.metrics import evaluate, knn, map_at_r, precision_at_k, recall_at_k


def brute_force(query, qlab, ref, rlab, ref_includes_query, ks):
    """Nested loops over every query and reference: the reference implementation."""
    out = {f"recall@{k}": [] for k in ks}
    out[f"precision@{max(ks)}"] = []
    out["map@r"] = []
    for i in range(len(query)):
        cands = [j for j in range(len(ref)) if not (ref_includes_query and j == i)]
        sims = [(-float(np.dot(query[i], ref[j])), j) for j in cands]
        ranked = [j for _, j in sorted(sims)]
        rel = [rlab[j] == qlab[i] for j in ranked]
        r = sum(rel)
        if r == 0:
            continue
        for k in ks:
            out[f"recall@{k}"].append(any(rel[:k]))
        out[f"precision@{max(ks)}"].append(sum(rel[: max(ks)]) / max(ks))
        ap = sum(sum(rel[: i2 + 1]) / (i2 + 1) for i2 in range(r) if rel[i2]) / r
        out["map@r"].append(ap)
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.mark.parametrize("ref_includes_query", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_matches_nested_loops(seed, ref_includes_query):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((60, 8)).astype(np.float32)
    rlab = rng.integers(0, 5, 60).astype(str)
    if ref_includes_query:
        query, qlab = ref, rlab
    else:
        query = rng.standard_normal((25, 8)).astype(np.float32)
        qlab = rng.integers(0, 5, 25).astype(str)
    got = evaluate(query, qlab, ref, rlab, ref_includes_query, ks=(1, 3, 10))
    want = brute_force(query, qlab, ref, rlab, ref_includes_query, ks=(1, 3, 10))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_knn_excludes_each_query_from_its_own_results():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 4)).astype(np.float32)
    _, idx = knn(x, x, 5, ref_includes_query=True)
    assert idx.shape == (30, 5)
    assert not (idx == np.arange(30)[:, None]).any()
    # the same neighbours as brute force without self
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_array_equal(idx[:, 0], sims.argmax(axis=1))


def test_knn_with_duplicates_still_drops_exactly_one_entry():
    x = np.ones((4, 3), np.float32)  # every score ties
    _, idx = knn(x, x, 3, ref_includes_query=True)
    assert idx.shape == (4, 3)
    for i, row in enumerate(idx):
        assert i not in row and len(set(row)) == 3


def test_metric_functions_on_a_hand_made_ranking():
    qlab = np.array(["a", "b"])
    nlab = np.array([["x", "a", "a"], ["b", "x", "x"]])
    assert recall_at_k(qlab, nlab, 1) == 0.5
    assert recall_at_k(qlab, nlab, 2) == 1.0
    assert precision_at_k(qlab, nlab, 3) == pytest.approx((2 / 3 + 1 / 3) / 2)
    # query a: R=2, relevant at ranks 2,3 -> (1/2 + 0)/2 (rank 3 is beyond R); query b: R=1 -> 1
    assert map_at_r(qlab, nlab, np.array([2, 1])) == pytest.approx((0.25 + 1.0) / 2)


def test_brute_force_reference_itself_is_sane():
    # a perfect embedding: each class a distinct axis
    x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)
    lab = np.repeat(np.array(list("abc")), 4)
    got = evaluate(x, lab, x, lab, True)
    assert got["recall@1"] == 1.0 and got["map@r"] == pytest.approx(1.0)
    assert list(itertools.islice(got, 1)) == ["recall@1"]
