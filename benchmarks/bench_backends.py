"""FAISS vs Milvus Lite vs a Milvus server through simlib's one index interface.

Same structured vectors (low rank plus noise, unit length) for every backend: insert time
(adding in chunks plus building the index until it answers), single-query and batched
queries/s, filtered single queries/s (one attribute value out of ten), recall@10 against
exact search. Prints a table, records the machine, saves JSON under benchmarks/results/.

    python benchmarks/bench_backends.py            # 100k x 128, HNSW (about 10 minutes on 2 cores)
    python benchmarks/bench_backends.py --smoke    # 3k x 32, seconds
    python benchmarks/bench_backends.py --server-uri http://host:19530   # an existing server
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simlib.config import IndexConfig
from simlib.index import Record, create_index

RESULTS = Path(__file__).resolve().parent / "results"
COLOURS = [f"colour{i}" for i in range(10)]


def structured(n: int, d: int, rank: int = 16, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """Low-rank plus noise unit vectors: HNSW recall on these means something (on isotropic noise it does not)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(12345).standard_normal((rank, d))  # queries and gallery share the subspace
    x = rng.standard_normal((n, rank)) @ basis + noise * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def machine() -> dict:
    """What a reader needs to compare figures: CPU, cores, load, versions."""
    cpu = ""
    if Path("/proc/cpuinfo").is_file():
        names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else ""
    import faiss
    import pymilvus

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "faiss": faiss.__version__,
        "pymilvus": pymilvus.__version__,
        "note": "2 cores shared with other jobs while measuring: compare ratios within one run",
    }


def bench_backend(name, make, x, q, truth, args) -> dict:
    records = [Record(int(i), f"/g/{i}.jpg", f"c{i % 47}", {"colour": COLOURS[i % 10]}) for i in range(len(x))]
    t0 = time.perf_counter()
    index = make()
    for start in range(0, len(x), args.chunk):
        index.add(x[start : start + args.chunk], records[start : start + args.chunk])
    index.settle()  # Milvus: flush and wait for the background index build
    insert_s = time.perf_counter() - t0
    try:
        n_single = min(args.single, len(q))
        t0 = time.perf_counter()
        for v in q[:n_single]:
            index.search(v[None], 10)
        single_qps = n_single / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, ids = index.search(q, 10)
        batched_qps = len(q) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for j, v in enumerate(q[:n_single]):
            index.search(v[None], 10, filters={"colour": COLOURS[j % 10]})
        filtered_qps = n_single / (time.perf_counter() - t0)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]))
        return {
            "backend": name,
            "kind": index.kind,
            "n": len(x),
            "insert_s": round(insert_s, 2),
            "single_qps": round(single_qps, 1),
            "batched_qps": round(batched_qps, 1),
            "filtered_qps": round(filtered_qps, 1),
            "recall@10": round(recall, 4),
        }
    finally:
        if name == "milvus-server":
            index.drop()  # a MilvusIndex: the server outlives the run
        index.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000, help="batched queries (and the recall sample)")
    p.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    p.add_argument("--chunk", type=int, default=5000, help="vectors per add() call, as streamed from embedding")
    p.add_argument("--kind", default="hnsw", choices=["auto", "flat", "hnsw", "ivfpq"])
    p.add_argument("--backends", default="faiss,milvus-lite,milvus-server")
    p.add_argument("--server-uri", help="an existing Milvus server instead of starting the embedded one")
    p.add_argument("--smoke", action="store_true", help="3k x 32, few queries: checks the script runs")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/backends-<n>-<date>.json)")
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.dim, args.queries, args.single, args.chunk = 3000, 32, 100, 20, 1000

    x = structured(args.n, args.dim, seed=0)
    q = structured(args.queries, args.dim, seed=1)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    config = IndexConfig(kind=args.kind)
    rows = []
    with tempfile.TemporaryDirectory(prefix="simlib-bench-") as tmp:
        for name in args.backends.split(","):
            print(f"{name} ...", file=sys.stderr, flush=True)
            if name == "faiss":
                rows.append(
                    bench_backend(
                        name, lambda: create_index("faiss", args.dim, config, expected_count=args.n), x, q, truth, args
                    )
                )
            elif name == "milvus-lite":
                uri = str(Path(tmp) / "bench.db")
                make = lambda uri=uri: create_index("milvus", args.dim, config, attributes=["colour"], uri=uri)  # noqa: E731
                rows.append(bench_backend(name, make, x, q, truth, args))
            elif name == "milvus-server":
                from contextlib import nullcontext

                from tests.support.milvus_server import local_server

                t0 = time.perf_counter()
                ctx = nullcontext(args.server_uri) if args.server_uri else local_server(Path(tmp) / "server")
                with ctx as uri:
                    start_s = time.perf_counter() - t0
                    make = lambda uri=uri: create_index(  # noqa: E731
                        "milvus", args.dim, config, attributes=["colour"], uri=uri, collection="simlib_bench"
                    )
                    row = bench_backend(name, make, x, q, truth, args)
                    row["server_start_s"] = round(start_s, 1)
                    rows.append(row)
            else:
                p.error(f"unknown backend {name}")

    header = ["backend", "kind", "n", "insert_s", "single_qps", "batched_qps", "filtered_qps", "recall@10"]
    print(f"\n{args.n:,} x {args.dim} structured vectors, {args.queries} queries, k=10")
    print(" | ".join(f"{h:>13}" for h in header))
    for r in rows:
        print(" | ".join(f"{r[h]!s:>13}" for h in header))
    result = {
        "benchmark": "bench_backends",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "results": rows,
    }
    out = args.out or RESULTS / f"backends-{args.n}x{args.dim}-{datetime.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
