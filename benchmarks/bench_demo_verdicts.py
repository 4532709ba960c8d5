"""The demo's training button and its duplicate merging, on the served product gallery.

    python -m benchmarks.bench_demo_verdicts --artifacts DIR      # DIR/index: the app's cached index

Two measurements on an index the app built (``python app_gradio.py --artifacts DIR --weights none``, which
calibrates it): every gallery image as a query (top 10, duplicates merged) with the model's calibrated copy
cut and with a fixed cosine, counting merges across labels; then, with ``--train``, the app's "Train a model
on this gallery" (``GalleryService.train`` as the button runs it) with its stage times, on a copy of DIR.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common


def merges(searcher, cut, n: int) -> dict:
    """Top-10 searches of the first ``n`` gallery images with duplicates merged at ``cut``: groups, merges,
    merges of two results the gallery labels differently."""
    from simlib.search import copies

    merged: list[tuple] = []
    original = copies.copies_among

    def spy(sims, path, kept_paths, c, thumbs, label=None, kept_labels=()):
        out = original(sims, path, kept_paths, c, thumbs, label, kept_labels)
        merged.extend((label, kept_labels[m] if m < len(kept_labels) else None) for m in np.flatnonzero(out))
        return out

    records = searcher.index.records()[:n]
    vectors = searcher.index.vectors_of([r.id for r in records])
    groups = 0
    t0 = time.perf_counter()
    with _patched(spy):
        for v in vectors:
            groups += sum(1 for h in searcher.query_vector(v, 10, collapse_duplicates=cut) if h.duplicates)
    across = sum(1 for a, b in merged if a is not None and b is not None and a != b)
    name = "calibrated copy cut" if isinstance(cut, copies.CopyCut) else f"fixed cosine {cut:g}"
    return {"rule": name, "queries": n, "groups": groups, "merges": len(merged), "across_labels": across,
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


class _patched:
    """Route the searcher's copy decisions through ``spy`` for a while."""

    def __init__(self, spy) -> None:
        import simlib.search.searcher as searcher_module

        self.module, self.spy = searcher_module, spy

    def __enter__(self):
        self.original = self.module.copies_among
        self.module.copies_among = self.spy

    def __exit__(self, *exc):
        self.module.copies_among = self.original


def train(artifacts: Path) -> tuple[list[dict], str]:
    """The app's training on a copy of ``artifacts``: each progress line with its time, and the outcome."""
    from simlib.app import GalleryService
    from simlib.search import Searcher

    scratch = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        shutil.copytree(artifacts / "index", scratch / "index")
        service = GalleryService(Searcher.load(scratch / "index"), artifacts=scratch, allow_train=True)
        t0, lines = time.perf_counter(), []
        outcome = service.train(
            progress=lambda f, text: lines.append({"seconds": round(time.perf_counter() - t0, 1), "stage": text}),
            log=lambda line: None,
        )
        return [ln for ln in lines if not ln["stage"].startswith("training: epoch")], outcome.message
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--artifacts", type=Path, required=True, help="an artifacts folder whose index/ the app built")
    p.add_argument("--fixed", type=float, default=0.99985, help="the fixed cosine to compare with")
    p.add_argument("--queries", type=int, default=0, help="queries (0: every gallery image)")
    p.add_argument("--train", action="store_true", help="also time the app's training (minutes)")
    args = p.parse_args()
    common.setup_env()
    from simlib.search import Searcher

    searcher = Searcher.load(args.artifacts / "index")
    n = args.queries or len(searcher.index)
    load = os.getloadavg()
    rows = [merges(searcher, searcher.copy_cut, n), merges(searcher, args.fixed, n)]
    notes = [f"load average before: {load[0]:.1f}"]
    if args.train:
        stages, message = train(args.artifacts)
        notes += [f"{s['seconds']:>6} s  {s['stage']}" for s in stages] + [f"outcome: {message}"]
    common.finish("demo_verdicts", args, rows, notes=[*notes, f"load average after: {os.getloadavg()[0]:.1f}"])


if __name__ == "__main__":
    main()
