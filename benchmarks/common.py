"""Shared helpers for the benchmark scripts: machine record, interleaved timing, table, JSON.

Every script runs what it compares side by side in one process, interleaved round by round in a
seeded shuffled order, and reports medians: on a shared machine the load changes from second to
second, and ratios between interleaved runs survive that far better than absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs, in seconds")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON result")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (median reported)")
    p.add_argument("--seed", type=int, default=0)
    return p


def setup_env() -> None:
    """Quiet TensorFlow and point data at the shared folder when the user set nothing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    if "SIMLIB_DATA" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
        os.environ["SIMLIB_DATA"] = str(REPO.parent / "shared" / "data")


def product_table():
    """The product set (raises SimlibError with what to do when it is missing)."""
    from simlib.data import find_data_root, load_product_set
    from simlib.errors import SimlibError

    root = find_data_root()
    if root is None:
        raise SimlibError("no data root: set SIMLIB_DATA to the folder holding fashion-product-images-small")
    sub = root / "fashion-product-images-small"
    return load_product_set(sub if sub.is_dir() else root)


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, memory, load, library versions, date."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "bf16_flags": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f"}),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    import importlib.metadata as md

    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "faiss-cpu", "numpy", "gradio"):
        with contextlib.suppress(md.PackageNotFoundError):
            info[pkg] = md.version(pkg)
    return info


def rss_mib() -> float:
    """Resident memory of this process now, in MiB (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="utf-8") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def interleaved(cases: dict[str, Callable[[], float]], repeats: int, seed: int = 0) -> dict[str, list[float]]:
    """Run every case once per round, in a shuffled order each round; returns each case's results."""
    results: dict[str, list[float]] = {name: [] for name in cases}
    rng = random.Random(seed)
    for _ in range(repeats):
        order = list(cases)
        rng.shuffle(order)
        for name in order:
            results[name].append(cases[name]())
    return results


def median(values: Sequence[float]) -> float:
    """Median (nan for none)."""
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def rate(n: int, fn: Callable[[], Any]) -> float:
    """Items per second of ``fn`` processing ``n`` items."""
    t0 = time.perf_counter()
    fn()
    return n / max(time.perf_counter() - t0, 1e-12)


def fmt(value: Any) -> str:
    """A table cell: floats to 3 significant figures, bools as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return "-" if value is None else str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as a Markdown table (also readable as plain text)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def save_partial(name: str, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """Save the rows measured so far (``"partial": true``), so a long run stopped early keeps them."""
    finish(name, args, rows, partial=True, quiet=True)


def finish(name: str, args: argparse.Namespace, rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Print the table and save ``<out>/<name>[-smoke].json`` with the machine record; returns the payload."""
    quiet = extra.pop("quiet", False)
    payload = {
        "benchmark": name,
        "partial": False,
        "smoke": bool(args.smoke),
        "machine": machine(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
        **extra,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{name}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")
    if quiet:
        return payload
    print(f"\n## {name}\n")
    print(table(rows, extra.get("columns")))
    for note in extra.get("notes", []):
        print(f"- {note}")
    print(f"\nsaved {path}")
    return payload
