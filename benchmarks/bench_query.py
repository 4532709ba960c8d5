"""Query latency: one image file -> top-K hits (decode, forward, search), p50/p95.

Through ``Searcher.query`` on a product-set gallery, at each image size, and, when the Gradio app
(``simlib.app.build_app``) exists, through its running HTTP API with ``gradio_client``. Checks that
the compiled forward traced once for all queries (no per-call retracing).

    python -m benchmarks.bench_query            # README scale: 1,000-image gallery, 64 and 128 px
    python -m benchmarks.bench_query --smoke
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from benchmarks import common

GOAL_P50_MS = 150.0
GOAL_SIZE = 128


def latencies(fn, items, repeats: int) -> list[float]:
    """Milliseconds of ``fn(item)`` for every item, ``repeats`` times."""
    out = []
    for _ in range(repeats):
        for item in items:
            t0 = time.perf_counter()
            fn(item)
            out.append((time.perf_counter() - t0) * 1000)
    return out


def row_for(path: str, size: int, gallery: int, ms: list[float], traces) -> dict:
    p50 = common.percentile(ms, 50)
    return {
        "path": path,
        "image_px": size,
        "gallery": gallery,
        "queries": len(ms),
        "p50_ms": p50,
        "p95_ms": common.percentile(ms, 95),
        "mean_ms": float(np.mean(ms)),
        "traces": traces,
        "goal_p50_met": (p50 <= GOAL_P50_MS) if size == GOAL_SIZE else None,
    }


def http_search(http, base_url: str, path: str, k: int, defaults: list) -> list:
    """One search through Gradio's documented HTTP API on a kept-alive connection.

    Upload the file, start the "search" event, read its event stream: what a browser or any HTTP
    client that keeps its connection does (the README shows the same calls). ``defaults``: the
    values of the parameters after ``k`` (filters, collapse). Returns the event's output list.
    """
    import json

    with open(path, "rb") as f:
        uploaded = http.post(f"{base_url}gradio_api/upload", files={"files": f}).raise_for_status().json()[0]
    data = [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, k, *defaults]
    event = http.post(f"{base_url}gradio_api/call/search", json={"data": data}).raise_for_status().json()["event_id"]
    with http.stream("GET", f"{base_url}gradio_api/call/search/{event}") as stream:
        lines = iter(stream.iter_lines())
        for line in lines:
            if line in ("event: complete", "event: error"):
                payload = json.loads(next(lines).removeprefix("data:"))
                if line == "event: error":
                    raise RuntimeError(f"search failed through the HTTP API: {payload}")
                return payload
    raise RuntimeError("the event stream ended without a result")


GRADIO_PATHS = {
    "client": "gradio_client (defaults)",
    "client_nodl": "gradio_client (download_files=False)",
    "http": "HTTP API (kept-alive connection)",
}


def gradio_rows(searcher, queries, k: int, size: int, gallery: int, repeats: int) -> list[dict]:
    """Latency through the running app's API, three ways, interleaved; skipped rows without the app.

    ``gradio_client`` opens a new HTTP connection, with a new TLS context, for every request (the
    upload, the event, its stream and each result image it downloads); a kept-alive HTTP client
    shows what the server itself takes.
    """
    import httpx
    from gradio_client import Client, handle_file

    from simlib.app import GalleryService, build_app
    from simlib.app.results import collapse_threshold
    from simlib.app.server import launch_settings

    service = GalleryService(searcher)
    demo = build_app(service)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_settings(service))
    try:
        url = demo.local_url
        client, client_nodl = Client(url, verbose=False), Client(url, verbose=False, download_files=False)
        with httpx.Client(timeout=60) as http:
            params = http.get(f"{url}gradio_api/info").json()["named_endpoints"]["/search"]["parameters"]
            defaults = [p["parameter_default"] for p in params[2:]]
            calls = {
                "client": lambda q: client.predict(handle_file(q), k, api_name="/search"),
                "client_nodl": lambda q: client_nodl.predict(handle_file(q), k, api_name="/search"),
                "http": lambda q: http_search(http, url, q, k, defaults),
            }
            collapse = collapse_threshold(searcher.info().to_dict())
            expected = [h.id for h in searcher.query(queries[0], k=k, collapse_duplicates=collapse)]
            for name, call in calls.items():  # warm-up, and every path returns the app's hits
                got = [h["id"] for h in call(queries[0])[1]["hits"]]
                if got != expected:
                    raise RuntimeError(f"{GRADIO_PATHS[name]} returned {got}, Searcher.query {expected}")
            ms = {name: [] for name in calls}
            for _ in range(repeats):  # interleaved query by query: the three paths see the same load
                for q in queries:
                    for name, call in calls.items():
                        t0 = time.perf_counter()
                        call(q)
                        ms[name].append((time.perf_counter() - t0) * 1000)
    finally:
        demo.close()
    return [row_for(GRADIO_PATHS[name], size, gallery, v, None) for name, v in ms.items()]


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,128")
    p.add_argument("--gallery", type=int, default=1000, help="gallery images (0: the whole product set)")
    p.add_argument("--queries", type=int, default=50, help="distinct query images (not in the gallery)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--no-gradio", action="store_true", help="skip the Gradio API rows")
    args = p.parse_args(argv)
    common.setup_env()
    if args.smoke:
        args.sizes, args.gallery, args.queries = "32", 40, 5
    repeats = args.repeats or (1 if args.smoke else 2)

    from simlib.config import ModelConfig
    from simlib.model import Embedder
    from simlib.search import Searcher

    table = common.product_table()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(table))
    n_gallery = args.gallery or len(table) - args.queries
    gallery = table.subset(np.sort(order[:n_gallery]))
    queries = [table.source(int(i)) for i in order[n_gallery : n_gallery + args.queries]]
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        model = Embedder.build(ModelConfig(image_size=size, weights="none", seed=args.seed))
        searcher, _ = Searcher.from_table(model, gallery, progress=False)
        searcher.query(queries[0], k=args.k)  # first call traces the forward for batch size 1 too
        ms = latencies(lambda q, s=searcher: s.query(q, k=args.k), queries, repeats)
        rows.append(
            row_for("Searcher.query", size, len(searcher.index), ms, model.forward.experimental_get_tracing_count())
        )
        print(common.table(rows[-1:]), flush=True)
        if not args.no_gradio:
            rows += gradio_rows(searcher, queries, args.k, size, len(searcher.index), repeats)
            print(common.table(rows[-3:]), flush=True)
    notes = [
        f"goal: p50 <= {GOAL_P50_MS:.0f} ms at {GOAL_SIZE} px; traces = times the compiled forward was traced "
        "(1 = no retracing across queries and gallery batches)",
        f"machine load average at end: {os.getloadavg()[0]:.1f}",
    ]
    return common.finish("query", args, rows, notes=notes)


if __name__ == "__main__":
    main(sys.argv[1:])
