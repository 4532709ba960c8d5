"""Index scaling: exact, HNSW and IVF-PQ (re-ranked) through simlib.index.VectorIndex.

Structured synthetic vectors (low rank plus noise, like real embeddings; isotropic noise would make
every approximate index look broken) at 10k / 100k / 1M x 128, plus the real product-set
embeddings when a file of them is given. For each kind and search setting: build time, memory
growth, queries/s batched and one at a time, recall@10 against the exact index, and which kind
``auto`` picks.

    python -m benchmarks.bench_index            # README scale (1M needs ~4 GB and several minutes)
    python -m benchmarks.bench_index --smoke    # seconds
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time

import numpy as np

from benchmarks import common

K = 10


def structured_vectors(n: int, dim: int, seed: int, rank: int = 32, noise: float = 0.35) -> np.ndarray:
    """Unit vectors from a ``rank``-dimensional subspace with a decaying spectrum, plus isotropic noise.

    Args:
        n: how many.
        dim: dimension.
        seed: the basis is fixed by ``seed`` alone; rows use ``seed`` and their chunk offset,
            so database and queries drawn with different seeds share the same structure.
        rank: dimension of the signal subspace.
        noise: noise standard deviation relative to the signal's per-dimension scale.
    """
    basis_rng = np.random.default_rng(12345)
    basis = np.linalg.qr(basis_rng.standard_normal((dim, rank)))[0].T.astype(np.float32)  # (rank, dim)
    scales = (1.0 / np.sqrt(1.0 + np.arange(rank))).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    rng = np.random.default_rng(seed)
    chunk = 100_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = rng.standard_normal((m, rank), dtype=np.float32) * scales
        x = z @ basis
        x += rng.standard_normal((m, dim), dtype=np.float32) * (noise * float(np.sqrt((scales**2).sum() / dim)))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def records(n: int):
    """Bare records (id only): metadata cost is not what this benchmark measures."""
    from simlib.index import Record

    return [Record(i) for i in range(n)]


def recall_at(ids: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    """Mean fraction of the true top-k found in the returned top-k."""
    hits = [len(set(a[:k].tolist()) & set(b[:k].tolist())) for a, b in zip(ids, truth, strict=True)]
    return float(np.mean(hits)) / k


def measure(index, queries: np.ndarray, n_single: int, repeats: int) -> tuple[float, float, np.ndarray]:
    """Median batched and single-query q/s (interleaved) and the batched result ids."""
    out = {}

    def batched() -> float:
        t0 = time.perf_counter()
        out["ids"] = index.search(queries, K)[1]
        return len(queries) / (time.perf_counter() - t0)

    def single() -> float:
        t0 = time.perf_counter()
        for q in queries[:n_single]:
            index.search(q, K)
        return n_single / (time.perf_counter() - t0)

    res = common.interleaved({"batched": batched, "single": single}, repeats)
    return common.median(res["batched"]), common.median(res["single"]), out["ids"]


def sweep(kind: str) -> list[dict]:
    """Search settings worth comparing per kind (build settings stay at IndexConfig's defaults)."""
    if kind == "hnsw":
        return [{"hnsw_ef_search": ef} for ef in (32, 64, 128)]
    if kind == "ivfpq":
        return [{"ivf_nprobe": p} for p in (0, 16)]  # 0: the default, a sixteenth of the cells
    return [{}]


# Run in a fresh process per mode: loading there shows the memory an index takes (RssAnon: the
# process's own pages; mapped file pages are page cache the system can reclaim).
LOAD_PROBE = """
import json, sys, time
import numpy as np
from simlib.index import VectorIndex
from simlib.index.faiss import import_faiss

def anon_mib():
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) / 1024

import_faiss()
queries = np.load(sys.argv[3])
before, t0 = anon_mib(), time.perf_counter()
index = VectorIndex.load(sys.argv[1], mmap=sys.argv[2] == "mmap")
load_s = time.perf_counter() - t0
t0 = time.perf_counter()
for q in queries:
    index.search(q, 10)
qps = len(queries) / (time.perf_counter() - t0)
print(json.dumps({"load_s": load_s, "mem_mib": anon_mib() - before, "qps_single": qps}))
"""


def load_rows(index, queries: np.ndarray, name: str) -> list[dict]:
    """Save ``index``, then load it read into memory and memory-mapped, each in a fresh process."""
    import json
    import subprocess
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        index.save(f"{tmp}/index")
        np.save(f"{tmp}/queries.npy", queries)
        for mode in ("read", "mmap"):
            out = subprocess.run(
                [sys.executable, "-c", LOAD_PROBE, f"{tmp}/index", mode, f"{tmp}/queries.npy"],
                capture_output=True, text=True, check=True, cwd=common.REPO,
            ).stdout  # fmt: skip
            probe = json.loads(out.strip().splitlines()[-1])
            rows.append({"data": name, "n": len(index), "kind": index.kind, "setting": f"loaded ({mode})", **probe})
            print(common.table(rows[-1:]), flush=True)
    return rows


def describe(setting: dict, index) -> str:
    """A search setting as the table shows it (IVF's automatic nprobe with the value it resolves to)."""
    if setting.get("ivf_nprobe") == 0:
        from simlib.index.faiss import import_faiss

        nlist = import_faiss().extract_index_ivf(index._index).nlist
        return f"ivf_nprobe=auto ({index.config.nprobe(nlist)} of {nlist})"
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "-"


def run_size(
    name: str, db: np.ndarray, queries: np.ndarray, kinds, n_single: int, repeats: int, load_probe_min: int = 1_000_000
) -> list[dict]:
    """All kinds and settings on one database; recall against the exact (flat) index.

    From ``load_probe_min`` vectors on, the kind ``auto`` picks and IVF-PQ are also saved and
    reloaded, read and memory-mapped (:func:`load_rows`).
    """
    from simlib.config import IndexConfig
    from simlib.index import VectorIndex, resolve_kind

    rows = []
    n = len(db)
    recs = records(n)
    truth = None
    flat_batched = flat_single = float("nan")
    auto_kind = resolve_kind("auto", n)
    for kind in kinds:
        if kind == "ivfpq" and n < 1000:
            continue
        gc.collect()
        rss0 = common.rss_mib()
        t0 = time.perf_counter()
        index = VectorIndex.build(db, recs, IndexConfig(kind=kind))
        build_s = time.perf_counter() - t0
        mem = common.rss_mib() - rss0
        base = index.config
        for setting in sweep(kind):
            index.config = dataclasses.replace(base, **setting)
            qb, qs, ids = measure(index, queries, n_single, repeats)
            if kind == "flat":
                truth, flat_batched, flat_single = ids, qb, qs
            default = all(getattr(base, k) == v for k, v in setting.items())
            rows.append(
                {
                    "data": name,
                    "n": n,
                    "kind": kind,
                    "setting": describe(setting, index),
                    "default": default,
                    "auto": kind == auto_kind and default,
                    "build_s": build_s,
                    "mem_mib": mem,
                    "qps_batched": qb,
                    "qps_single": qs,
                    "speedup_batched": qb / flat_batched,
                    "speedup_single": qs / flat_single,
                    "recall@10": recall_at(ids, truth) if truth is not None else float("nan"),
                }
            )
            print(common.table(rows[-1:]), flush=True)
        index.config = base
        if kind in (auto_kind, "ivfpq") and n >= load_probe_min:
            rows += load_rows(index, queries[:n_single], name)
        del index
        gc.collect()
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        help="database sizes (comma-separated; '' for the real embeddings only)",
    )
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=300, help="batched queries per size")
    p.add_argument("--single", type=int, default=50, help="queries timed one at a time")
    p.add_argument("--kinds", default="flat,hnsw,ivfpq")
    p.add_argument("--name", default="index", help="result file name (index-real for a real-embeddings-only run)")
    p.add_argument(
        "--real", default=None, help=".npy of real embeddings (default: benchmarks/results/product-embeddings.npy)"
    )
    p.add_argument(
        "--real-model",
        default=None,
        metavar="DIR",
        help="instead: embed the product set with this model (e.g. trained)",
    )
    args = p.parse_args(argv)
    common.setup_env()
    if args.smoke:
        args.sizes, args.queries, args.single = "2000", 100, 20
    repeats = args.repeats or (1 if args.smoke else 2)
    kinds = args.kinds.split(",")
    rows = []
    for n in (int(s) for s in args.sizes.split(",") if s.strip()):
        db = structured_vectors(n, args.dim, seed=args.seed)
        queries = structured_vectors(args.queries, args.dim, seed=args.seed + 1_000_003)
        probe_min = min(int(x) for x in args.sizes.split(",")) if args.smoke else 1_000_000
        rows += run_size("synthetic", db, queries, kinds, args.single, repeats, probe_min)
        common.save_partial(args.name, args, rows)
        del db
        gc.collect()
    real = common.RESULTS_DIR / "product-embeddings.npy" if args.real is None else args.real
    notes = []
    label = "product set (untrained, bench_embed)"  # bench_embed embeds with weights=none
    if args.real_model and not args.smoke:
        from simlib.model import Embedder
        from simlib.model.embed import embed_table

        model = Embedder.load(args.real_model)
        trained = "trained" if model.config.trained else "untrained"
        label = f"product set ({trained}, {model.config.image_size} px)"
        real = common.RESULTS_DIR / "product-embeddings-model.npy"
        np.save(real, embed_table(model, common.product_table(), progress=False).embeddings)
    if real and not args.smoke and common.Path(real).is_file():
        emb = np.load(real).astype(np.float32)
        rng = np.random.default_rng(args.seed)
        q_rows = rng.choice(len(emb), size=min(500, len(emb) // 5), replace=False)
        mask = np.ones(len(emb), bool)
        mask[q_rows] = False
        rows += run_size(label, emb[mask], emb[q_rows], kinds, min(args.single, len(q_rows)), repeats)
    elif not args.smoke:
        notes.append(f"real embeddings skipped: {real} not found (bench_embed writes it)")
    return common.finish(
        args.name,
        args,
        rows,
        columns=[
            "data",
            "n",
            "kind",
            "setting",
            "auto",
            "build_s",
            "mem_mib",
            "qps_batched",
            "qps_single",
            "speedup_batched",
            "speedup_single",
            "recall@10",
            "load_s",
        ],
        notes=notes,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
