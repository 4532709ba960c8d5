"""Collect benchmarks/results/*.json into the Markdown tables of docs/performance.md.

python -m benchmarks.report     # prints the tables and writes benchmarks/results/report.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks import common

SECTIONS = {
    "embed": (
        "Embedding throughput (img/s; simlib = `embed_table`: JPEG decode + resize + forward + normalise)",
        {
            "image_px": "px",
            "ceiling_img_s": "forward only (ceiling)",
            "simlib_img_s": "simlib pipeline",
            "loop_img_s": "per-image predict loop",
            "decode_img_s": "decode only",
            "simlib/ceiling": "simlib / ceiling (goal ≥ 0.9)",
            "simlib/loop": "simlib / loop (goal ≥ 10)",
        },
    ),
    "precision": (
        "mixed_bfloat16 against float32 (same weights; quality on the product-set test split)",
        {
            "image_px": "px",
            "float32_img_s": "float32 img/s",
            "bf16_img_s": "bf16 img/s",
            "speedup": "speed-up",
            "cos_mean": "cosine(f32, bf16) mean",
            "cos_min": "min",
            "top1_same": "same top-1",
            "recall1_f32": "R@1 f32",
            "recall1_bf16": "R@1 bf16",
            "recall1_diff": "ΔR@1",
        },
    ),
    "query": (
        "Query latency, one image file → top-10 (decode, forward, search)",
        {
            "path": "through",
            "image_px": "px",
            "gallery": "gallery",
            "p50_ms": "p50 ms",
            "p95_ms": "p95 ms",
            "traces": "traces",
            "goal_p50_met": "p50 ≤ 150 ms",
            "skipped": "note",
        },
    ),
    "index": (
        "Index scaling, d = 128 (recall@10 against exact; speed-up against exact on the same data)",
        {
            "data": "data",
            "n": "vectors",
            "kind": "kind",
            "setting": "search setting",
            "auto": "auto",
            "build_s": "build s",
            "mem_mib": "memory MiB",
            "qps_batched": "q/s batched",
            "qps_single": "q/s single",
            "speedup_batched": "× exact batched",
            "speedup_single": "× exact single",
            "recall@10": "recall@10",
            "load_s": "load s",
        },
    ),
    "train": (
        "Training throughput (triplets/s against a bare step on cached tensors) and the frozen path end to end",
        {"feed": "fed from", "backbone": "backbone", "image_px": "px", "triplets_per_step": "triplets/step",
         "triplets_s": "triplets/s", "ratio": "ratio", "images": "images", "epochs": "epochs",
         "seconds": "end to end s", "setup_s": "of which setup s", "note": "note"},
    ),
}  # fmt: skip


def render(results_dir: Path = common.RESULTS_DIR) -> str:
    """The Markdown for every result file found (non-smoke)."""
    parts, machine = [], None
    for name, (title, columns) in SECTIONS.items():
        path = results_dir / f"{name}.json"
        if not path.is_file():
            parts.append(f"**{title}**: not run (`python -m benchmarks.bench_{name}`)\n")
            continue
        payload = json.loads(path.read_text(encoding="utf-8"))
        extra = results_dir / f"{name}-real.json"  # a separate real-embeddings run, when there is one
        if extra.is_file():
            payload["rows"] += json.loads(extra.read_text(encoding="utf-8"))["rows"]
        machine = machine or payload["machine"]
        rows = [{columns[k]: r.get(k) for k in columns} for r in payload["rows"]]
        used = [c for c in columns.values() if any(r[c] is not None for r in rows)]
        load = payload["machine"].get("load_average", payload["machine"].get("load_average_at_start"))
        when = (
            f"{payload['machine']['date_utc']}, load average {load[0]:.1f}" if load else payload["machine"]["date_utc"]
        )
        parts.append(f"**{title}** ({when})\n\n{common.table(rows, used)}\n")
    if machine:
        versions = ", ".join(
            f"{k} {machine[k]}" for k in ("tensorflow-cpu", "tensorflow", "keras", "faiss-cpu") if k in machine
        )
        parts.insert(
            0,
            f"Machine: {machine['cpu']}, {machine['cores']} cores ({', '.join(machine.get('bf16_flags', []))}), "
            f"{machine.get('memory_gib', '?')} GiB, Python {machine['python']}, {versions}.\n",
        )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> str:
    text = render()
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (common.RESULTS_DIR / "report.md").write_text(text, encoding="utf-8")
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
