"""Run the whole course at full scale, record it in docs/results/course.json, and render the pages that quote it.

    SIMLIB_DATA=../shared/data .venv/bin/python -m benchmarks.record_course            # run, record, render
    .venv/bin/python -m benchmarks.record_course --render-only                        # render from the record

The run is ``make notebooks``'s (papermill, ``--cwd notebooks``, the six notebooks in order, ``WEIGHTS=none``,
``IMAGE_SIZE=64``, seed 0) into a fresh artifacts folder, each notebook timed with the 1-minute load average
after it. The record holds the command, the machine, the load, the run times and the results the notebooks
wrote (``03_training.json``, ``05_evaluation.json``). The README's course table, its "What training gives"
section and docs/training.md's measured table are then rendered from the record
(:func:`simlib.evaluation.claims.results_table` and the verdicts of the recorded differences);
``tests/test_docs_claims.py`` checks them against it.
"""

# ruff: noqa: E501  (the rendered page text keeps the pages' own line breaks)
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from simlib.evaluation.claims import results_table
from simlib.evaluation.stats import verdict, verdict_phrase

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "docs" / "results" / "course.json"
NOTEBOOKS = (
    "01_data_preparation",
    "02_embeddings_baseline",
    "03_triplet_training",
    "04_faiss_indexing",
    "05_evaluation",
    "06_gradio_demo",
)
METHODS = ["pixels", "untrained backbone", "head before training", "trained"]
GROUPS = [
    ("image", "seen", "image-disjoint, classes trained on"),
    ("image", "unseen", "image-disjoint, classes held out of training"),
    ("class", "unseen", "class-disjoint, a model trained on the class split"),
]
COMMAND = "make notebooks WEIGHTS=none IMAGE_SIZE=64 (papermill, --cwd notebooks; product set, seed 0)"


def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else float("nan")


def machine() -> str:
    """Cores, the CPU's matrix extensions, memory, GPU: what the run times depend on."""
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.findall(r"\b(avx512f|amx_tile)\b", cpu))
    ext = " + ".join(n for f, n in (("avx512f", "AVX-512"), ("amx_tile", "AMX")) if f in flags)
    mem = ""
    if Path("/proc/meminfo").exists():
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {round(kb / 2**20)} GiB"
    gpu = "a GPU" if shutil.which("nvidia-smi") else "no GPU"
    return f"{os.cpu_count()} cores" + (f" ({ext})" if ext else "") + f"{mem}, {gpu}"


def run_course(artifacts: Path, executed: Path, python: str) -> dict:
    """The six notebooks in order, each timed; returns the record's timing fields."""
    papermill = str(Path(python).with_name("papermill"))
    executed.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(artifacts, ignore_errors=True)  # a fresh run: no model, index or feature cache left over
    start = load_1min()
    seconds = {}
    for name in NOTEBOOKS:
        t0 = time.perf_counter()
        cmd = [papermill, f"notebooks/{name}.ipynb", str(executed / f"{name}.ipynb"), "--cwd", "notebooks",
               "-p", "WEIGHTS", "none", "-p", "IMAGE_SIZE", "64", "-p", "ARTIFACTS", str(artifacts)]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True)
        seconds[name] = {"seconds": round(time.perf_counter() - t0), "load_1min_after": load_1min()}
        print(f"{name}: {seconds[name]['seconds']} s, load {seconds[name]['load_1min_after']}", flush=True)
    return {"load_average_at_start": start, "notebook_seconds": seconds}


def build_record(timing: dict, artifacts: Path, note: str | None) -> dict:
    """The record from the run's timing and the JSON files its notebooks wrote."""
    training = json.loads((artifacts / "03_training.json").read_text())
    evaluation = json.loads((artifacts / "05_evaluation.json").read_text())
    baseline = json.loads((artifacts / "02_baseline.json").read_text())
    load = timing["load_average_at_start"]
    shared = note or ("shared with other jobs" if load >= 1.0 else "otherwise idle")
    keys = ("best_epoch", "seconds", "best_val_recall@1", "best_val_unseen_recall@1")
    return {
        "what": "the course run at full scale (notebooks/01-06 with papermill), the figures the README and "
        "docs/training.md quote",
        "command": COMMAND,
        "recorded_by": "python -m benchmarks.record_course",
        "feature_cache": True,
        "machine": f"{machine()}, {shared}",
        "load_average_at_start": load,
        "notebook_seconds": timing["notebook_seconds"],
        "total_seconds": sum(t["seconds"] for t in timing["notebook_seconds"].values()),
        "embedding_images_per_second_64px": round(baseline["images_per_second"]),
        "training": {
            **{run: {k: training[run][k] for k in keys} for run in ("labels", "labels_class", "self")},
            "plan": training.get("plan", {}),
        },
        "rows": evaluation["table"],
        "differences": evaluation["differences"],
        "weights": evaluation["weights"],
    }


def comparable_results(artifacts: Path) -> dict:
    """What a run of the same commit must reproduce: notebook 03's training record (its runs, the explicit loop,
    the mining counts, the collapse and feedback demos) and notebook 05's table and paired differences, without
    run times and paths."""

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("seconds", "models")}
        return [strip(v) for v in x] if isinstance(x, list) else x

    training = json.loads((artifacts / "03_training.json").read_text())
    evaluation = json.loads((artifacts / "05_evaluation.json").read_text())
    return strip({"training": training, "table": evaluation["table"], "differences": evaluation["differences"]})


def repeat_run(timing: dict, artifacts: Path, first: dict) -> dict:
    """One more run of the course: its total time, its load, and which results differ from the first run's."""
    results = comparable_results(artifacts)
    runs = sorted(set(first["training"]) | set(results["training"]))
    differ = [f"training.{k}" for k in runs if first["training"].get(k) != results["training"].get(k)]
    differ += [k for k in ("table", "differences") if first[k] != results[k]]
    return {
        "total_seconds": sum(t["seconds"] for t in timing["notebook_seconds"].values()),
        "load_average_at_start": timing["load_average_at_start"],
        "results_that_differ": differ,
    }


# ----------------------------------------------------------------------------- rendering the pages
def _diff(r: dict, split: str, part: str, a: str, b: str, metric: str) -> dict:
    return next(
        d
        for d in r["differences"]
        if (d["split"], d["part"], d["metric"]) == (split, part, metric) and (d["a"], d["b"]) == (a, b)
    )


def _said(d: dict) -> str:
    """``trained beats pixels (+4.1 points [+1.7, +6.4])``: the verdict from the interval, then the figures."""
    word = verdict(d["low"], d["high"])
    return (
        f"{verdict_phrase(d['a'], d['b'], word)} ({100 * d['difference']:+.1f} points "
        f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}])"
    )


def _row(r: dict, split: str, part: str, method: str) -> dict:
    return next(x for x in r["rows"] if (x["split"], x["part"], x["method"]) == (split, part, method))


def _load_words(r: dict) -> str:
    shared = "idle" not in r["machine"]
    return (
        f"while other jobs shared it (load average {r['load_average_at_start']} at the start)"
        if shared
        else f"otherwise idle (load average {r['load_average_at_start']} at the start)"
    )


def training_table(r: dict) -> str:
    return results_table(r["rows"], r["differences"], GROUPS, METHODS, reference="trained")


def readme_training(r: dict) -> str:
    """The README's "What training gives" text up to "How it works" (table and verdicts)."""
    plan = r["training"].get("plan") or {}
    epochs = f"at most {plan['epochs']} epochs, patience {plan['patience']}" if plan else "early stopping"
    held, cls = ("image", "unseen"), ("class", "unseen")
    nd_free, nd_pix = _row(r, "near-duplicate", "all", "label-free"), _row(r, "near-duplicate", "all", "pixels")
    return (
        "From random weights (`WEIGHTS=none`, 64 px), the course's labelled model (notebook 03: `simlib.train.fit`\n"
        f"with labels, {epochs}) against 16×16 pixels, the untrained backbone and the **head before\n"
        "training** (the same architecture and fitted statistics, no gradient step), on held-out test images of the\n"
        "product set. Recall@1 (mAP@R in brackets), then *trained* minus each, in Recall@1 points with its paired\n"
        "bootstrap 95 % interval and the verdict the interval allows (each part's images query each other; compare\n"
        "within a row):\n\n"
        f"{training_table(r)}\n\n"
        "What the verdicts say (mAP@R scores each query's whole ranking, so it separates methods where Recall@1 is\n"
        f"noise). On the classes held out of training, on mAP@R {_said(_diff(r, *held, 'trained', 'pixels', 'map@r'))},\n"
        "on Recall@1 "
        f"{_said(_diff(r, *held, 'trained', 'pixels', 'recall@1'))}. On the class-disjoint split, on mAP@R\n"
        f"{_said(_diff(r, *cls, 'trained', 'pixels', 'map@r'))}, on Recall@1 "
        f"{_said(_diff(r, *cls, 'trained', 'pixels', 'recall@1'))}.\n"
        "What training itself added, on the class-disjoint split: on mAP@R\n"
        f"{_said(_diff(r, *cls, 'trained', 'head before training', 'map@r'))}. Label-free training\n"
        f"(`--mode self`) is for near-duplicates: it finds the original of an augmented copy {nd_free['recall@1']:.3f}\n"
        f"of the time (pixels {nd_pix['recall@1']:.3f}). "
    )


def readme_times(r: dict) -> str:
    """The README's paragraph after the course table, up to "The run's figures are recorded"."""
    total = r["total_seconds"]
    text = (
        "The times above are one full run (`make notebooks WEIGHTS=none`: 64 px, product set, seed 0) on the project's\n"
        f"{r['machine'].split(' ')[0]}-core machine {_load_words(r)}; the whole\n"
        f"course: {total} s ({total / 60:.1f} min). "
    )
    repeats = r.get("repeat_runs") or []
    if repeats:
        totals = [total] + [x["total_seconds"] for x in repeats]
        differ = sorted({d for x in repeats for d in x["results_that_differ"]})
        text += (
            f"{len(totals)} runs of the same commit, one after another on a fresh artifacts folder each: "
            f"{min(totals)}-{max(totals)} s; "
            + (
                "every run gave the same results to the last digit (notebook 03's training runs, loop and demos, "
                "notebook 05's table and paired differences). "
                if not differ
                else f"results that differed between runs: {', '.join(differ)}. "
            )
        )
    return text


def training_doc_measured(r: dict) -> str:
    """docs/training.md's "Measured" paragraph and table."""
    plan = r["training"].get("plan") or {}
    epochs = f"at most {plan['epochs']} epochs, patience {plan['patience']}" if plan else "early stopping"
    return (
        "**Measured** on the product set (4,888 images, 47 classes), 64 px, `--weights none`, seed 0, by the course's\n"
        f"full run (`make notebooks WEIGHTS=none`; notebook 03 trains with `fit`, {epochs}; notebook\n"
        "05 scores with `simlib.evaluation.compare`; the record: [results/course.json](results/course.json), which a test\n"
        'checks this table against). "seen" / "unseen": the image-disjoint test images of the classes the labels model\n'
        'trained on, and of the classes it held out whole for validation (20 % of the training-side classes); "class":\n'
        "the class-disjoint test split, scored with the model trained on the class split. Recall@1 (mAP@R in brackets),\n"
        "then *trained* minus each method in Recall@1 points, with its paired bootstrap 95 % interval and verdict:\n\n"
        f"{training_table(r)}\n\n"
    )


def training_doc_times(r: dict) -> str:
    """docs/training.md's run-times bullet."""
    t = r["training"]
    shared = "idle" not in r["machine"]
    if r.get("feature_cache"):
        head = (
            "- **Run times** of that run (whole `fit` calls: decoding, backbone features (from the course's feature\n"
            "  cache where notebook 03 computed them already), PCA, training, saving; "
            + ("the machine shared with other jobs" if shared else "the machine otherwise idle")
            + ", load average\n"
            f"  {r['load_average_at_start']} at the start): labels on the image split\n"
        )
    else:
        head = (
            "- **Run times** of that run (whole `fit` calls: decoding, backbone features, PCA, training, saving; the machine\n"
            + ("  shared with other jobs" if shared else "  otherwise idle")
            + f", load average {r['load_average_at_start']} at the start): labels on the image split\n"
        )
    return head + (
        f"  {t['labels']['seconds']:.0f} s (kept epoch {t['labels']['best_epoch']}), on the class split\n"
        f"  {t['labels_class']['seconds']:.0f} s (kept epoch {t['labels_class']['best_epoch']}), label-free\n"
        f"  {t['self']['seconds']:.0f} s (kept epoch {t['self']['best_epoch']}, 3 views per image).\n"
    )


def replace_between(text: str, start: str, end: str, new: str) -> str:
    """``text`` with the part from ``start`` up to (not including) ``end`` replaced by ``new``."""
    i = text.index(start)
    j = text.index(end, i)
    return text[:i] + new + text[j:]


def render_readme(readme: str, r: dict) -> str:
    """README.md's text with the record's course times and "What training gives" figures."""
    for name, t in r["notebook_seconds"].items():
        readme = re.sub(rf"(\| `{name}` \|.*\| )\d+ s \|$", rf"\g<1>{t['seconds']} s |", readme, flags=re.M)
    readme = replace_between(
        readme, "The times above are one full run", "The run's figures are recorded", readme_times(r)
    )
    return replace_between(
        readme, "From random weights (`WEIGHTS=none`", "How it works, `simlib compare`", readme_training(r)
    )


def render_training_doc(doc: str, r: dict) -> str:
    """docs/training.md's text with the record's table and run times."""
    doc = replace_between(doc, "**Measured** on the product set", "- Read the verdicts", training_doc_measured(r))
    return replace_between(
        doc, "- **Run times** of that run", "- `benchmarks/bench_training.py`", training_doc_times(r)
    )


PAGES = {"README.md": render_readme, "docs/training.md": render_training_doc}


def render(r: dict) -> None:
    """Write the record's figures into README.md and docs/training.md."""
    for page, fn in PAGES.items():
        path = REPO / page
        path.write_text(fn(path.read_text(encoding="utf-8"), r), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", default="artifacts/record-course", help="the course's artifacts (emptied first)")
    p.add_argument("--executed", default="artifacts/record-course-notebooks", help="the executed notebooks")
    p.add_argument("--render-only", action="store_true", help="render the pages from the existing record")
    p.add_argument("--note", default=None, help='how the machine was shared (default: from the load, e.g. "idle")')
    p.add_argument("--runs", type=int, default=1, help="run the course this many times (the record is the first "
                   "run's; the others add their time and which results differ)")  # fmt: skip
    args = p.parse_args(argv)
    if not args.render_only:
        artifacts = (REPO / args.artifacts).resolve()
        timing = run_course(artifacts, (REPO / args.executed).resolve(), sys.executable)
        record = build_record(timing, artifacts, args.note)
        first = comparable_results(artifacts)
        repeats = []
        for i in range(2, args.runs + 1):
            again = artifacts.with_name(f"{artifacts.name}-run{i}")
            more = run_course(again, (REPO / f"{args.executed}-run{i}").resolve(), sys.executable)
            repeats.append(repeat_run(more, again, first))
        if repeats:
            record["repeat_runs"] = repeats
        RECORD.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {RECORD.relative_to(REPO)}: the course took {record['total_seconds']} s")
    render(json.loads(RECORD.read_text(encoding="utf-8")))
    print("rendered README.md and docs/training.md from the record")


if __name__ == "__main__":
    main()
