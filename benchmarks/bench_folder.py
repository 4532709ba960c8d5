"""A real photo folder at scale: index rate against the bare forward rate, sync, resume after kill -9, start-up.

Generates (seeded, once, reused while its parameters match) a messy folder of camera-sized JPEGs from the
product images (``benchmarks/messy.py``: nested folders, 3,000-4,000 px photos, EXIF rotations, planted
near-copies and exact copies, junk entries), then measures on it, in one process where it can:

- ``forward``: ResNet50 (untrained) at 64 px on pre-decoded uint8 batches: the bare model rate;
- ``decode``: one image decoded and resized to 64 px, full size vs reduced size (JPEG draft), per core;
- ``index``: ``simlib.photos.build.index_folder`` over the whole folder (scan, decode in threads beside the
  model, chunks on disk, index built and saved), its rate and its ratio to ``forward``;
- ``resume``: the same index run in another process, SIGKILLed once ~50 % of its chunks are on disk, then
  run again to the end: the time of the rest, and whether ids and vectors equal the uninterrupted run's;
- ``sync``: 100 photos added and 50 removed, then ``sync_index``: its time and how many images it embedded;
- ``start-up``: a fresh process opening the index (and a 100,000-image index made from its vectors) as an
  app does: TensorFlow import, model and index load, first query; wall time and peak memory.

    python -m benchmarks.bench_folder --n 2000          # what docs/own-photos.md reports
    python -m benchmarks.bench_folder --n 400 --side 800 1000 --kinds all --big 10000   # every file kind
    python -m benchmarks.bench_folder --n 20000         # the issue's scale: ~6.5 GB of JPEGs, ~80 min to generate here
    python -m benchmarks.bench_folder --n 2000 --generate-only   # write the folder now, measure later
    python -m benchmarks.bench_folder --smoke
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import common

GOAL_RATIO = 0.8

KILL_SCRIPT = """
import sys
from simlib.config import ModelConfig
from simlib.model import Embedder
from simlib.photos.build import index_folder
m = Embedder.build(ModelConfig(image_size=int(sys.argv[3]), weights="none", seed=0))
index_folder(m, sys.argv[1], sys.argv[2], chunk_size=int(sys.argv[4]), progress=False)
"""

STARTUP_SCRIPT = """
import resource, sys, time
t0 = time.perf_counter()
from simlib.search import Searcher
s = Searcher.load(sys.argv[1])
loaded = time.perf_counter() - t0
hits = s.query(sys.argv[2], k=5)
first = time.perf_counter() - t0
import os
rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
print(loaded, first, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss, len(s.index), s.index.kind)
"""


def source_photos(table, n: int, seed: int) -> list[str]:
    """The product photo behind each generated image number (seeded; past the 4,888 products they repeat)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(table), min(len(table), n), replace=False)
    sources = [table.paths[r] for r in rows]
    while len(sources) < n:  # the same photos again, as other files
        sources += [table.paths[r] for r in rng.permutation(len(table))[: n - len(sources)]]
    return sources


def generate(args) -> tuple[Path, Path, dict]:
    """The messy folder (``n`` originals) and a reserve of 100 more photos for the sync; reused when they match."""
    from benchmarks.messy import make_messy_folder

    table = common.product_table()
    from benchmarks.messy import KINDS

    kinds = KINDS if args.kinds == "all" else ("jpeg", "jpeg_exif")
    tag = f"{args.n}" + ("-all" if args.kinds == "all" else "")
    root = args.work / f"folder-{tag}"
    spec = {"n": args.n, "side": args.side, "seed": args.seed, "kinds": list(kinds), "version": 2}
    marker = args.work / f"folder-{tag}.json"
    reserve = args.work / f"reserve-{tag}"
    if marker.is_file() and json.loads(marker.read_text()).get("spec") == spec:
        return root, reserve, json.loads(marker.read_text())
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(reserve, ignore_errors=True)
    sources = source_photos(table, args.n + 100, args.seed)
    t0 = time.perf_counter()
    messy = make_messy_folder(
        root, sources[: args.n], seed=args.seed, side=tuple(args.side), kinds=kinds,
        workers=args.gen_workers,
    )  # fmt: skip
    make_messy_folder(
        reserve, sources[args.n :], seed=args.seed + 1, side=tuple(args.side), kinds=kinds,
        n_copied=0, exact_copies=0, hostile=False, workers=args.gen_workers,
    )  # fmt: skip
    info = {
        "spec": spec,
        "files": len(messy.images),
        "bytes": sum(os.path.getsize(p) for p in messy.images),
        "generate_s": time.perf_counter() - t0,
    }
    marker.write_text(json.dumps(info))
    return root, reserve, info


def planted_pairs(paths: list[str]) -> dict[frozenset, str]:
    """The planted duplicate pairs, from the generator's names (``imgN.*``, ``imgN-<how><c>.jpg``,
    ``copy-of-imgN.*``): pair -> "cropped" when either side is a crop, else "copy"."""
    import re

    groups: dict[str, list[str]] = {}
    for path in paths:
        m = re.fullmatch(r"(?:copy-of-)?(img\d+)(?:-(resized|reencoded|cropped)\d+)?", Path(path).stem)
        if m:
            groups.setdefault(m.group(1), []).append(path)
    pairs = {}
    for members in groups.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                pairs[frozenset((a, b))] = "cropped" if "-cropped" in a + b else "copy"
    return pairs


def group_hits(groups, truth: dict) -> tuple[int, set]:
    """``(pairs in the groups, the planted pairs among them)``, counted without listing every grouped pair."""
    where = {m.path: n for n, g in enumerate(groups) for m in (g.keep, *g.others)}
    total = sum((len(g.others) + 1) * len(g.others) // 2 for g in groups)
    hits = set()
    for pair in truth:
        a, b = tuple(pair)
        if a in where and where[a] == where.get(b):
            hits.add(pair)
    return total, hits


def duplicates_rows(index_dir: Path, paths: list[str], sources: list[str], seed: int) -> list[dict]:
    """Calibrate and find the duplicate groups of the index; precision and recall against the planted pairs,
    with the pixel-fingerprint check and with the model's threshold alone.

    A found pair that was not planted is counted apart when its two product photos are themselves
    near-identical in the catalogue (mean absolute difference under 3 grey levels at 64 px: the same
    product listed twice, two shades of one lipstick): ``precision_strict`` counts them as wrong,
    ``precision`` as right.
    """
    import re

    from simlib.data import prepare_image
    from simlib.photos.duplicates import Fingerprints, calibrate_duplicates, find_duplicates, pair_scores
    from simlib.photos.store import work_dir
    from simlib.search import Searcher

    searcher = Searcher.load(index_dir)
    fingerprints = Fingerprints(searcher.index, work_dir(index_dir))
    t0 = time.perf_counter()
    info = calibrate_duplicates(searcher, seed=seed, fingerprints=fingerprints)
    groups = find_duplicates(
        searcher.index, info["score"], pixel_threshold=info["pixel_score"], fingerprints=fingerprints
    )
    took = time.perf_counter() - t0
    truth = planted_pairs(paths)
    copies = {p for p, kind in truth.items() if kind == "copy"}
    crops = set(truth) - copies

    def source(path: str) -> str:
        return sources[int(re.search(r"img(\d+)", Path(path).name).group(1))]

    def looks_same(pair) -> bool:
        a, b = sorted(pair)
        return np.abs(prepare_image(source(a), 64).astype(float) - prepare_image(source(b), 64)).mean() < 3

    rows = []
    model_only = find_duplicates(searcher.index, info["score"])
    for name, found_groups in (("model + fingerprint", groups), ("model threshold alone", model_only)):
        total, hits = group_hits(found_groups, truth)
        row = {
            "step": f"duplicates: {name}",
            "images": len(searcher.index),
            "precision_strict": len(hits) / max(1, total),
            "recall_copies": len(hits & copies) / max(1, len(copies)),
            "recall_crops": len(hits & crops) / max(1, len(crops)),
            "pairs_found": total,
            "pairs_planted": len(truth),
        }
        if total <= 100_000:
            catalogue = {pair for pair in pair_scores(found_groups) - set(truth) if looks_same(pair)}
            row.update(precision=(len(hits) + len(catalogue)) / max(1, total), catalogue_pairs=len(catalogue))
        rows.append(row)
    rows[0].update(
        seconds=took,
        supported=info["supported"],
        linked_share=info["linked_share"],
        linked_share_model_only=info["linked_share_model_only"],
        thresholds=[info["score"], info["pixel_score"]],
    )
    return rows


def forward_rate(model, batch_size: int, n: int, repeats: int) -> tuple[float, float]:
    """The bare model on pre-decoded batches: ``(images per second, CPU ms per image over all threads)``."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, model.image_size, model.image_size, 3), dtype=np.uint8)
    model.embed_batch(x[:batch_size])  # trace
    rates, cpu, bs = [], [], batch_size
    for _ in range(repeats):
        c0 = time.process_time()
        rates.append(common.rate(n, lambda: [model.embed_batch(x[i : i + batch_size]) for i in range(0, n, bs)]))
        cpu.append(1000 * (time.process_time() - c0) / n)
    return common.median(rates), common.median(cpu)


def decode_ms(paths: list[str], size: int) -> dict[str, float]:
    """Per image, in one thread: decode + resize at full size (wall ms), and what indexing does (read once, hash,
    reduced decode, resize: :func:`simlib.data.pipeline.read_image`) in wall ms and CPU ms."""
    from simlib.data import open_image, resize_image
    from simlib.data.pipeline import read_image

    full = common.rate(len(paths), lambda: [resize_image(open_image(p), size) for p in paths])
    c0 = time.process_time()
    reduced = common.rate(len(paths), lambda: [read_image(p, size, digest=True) for p in paths])
    cpu = 1000 * (time.process_time() - c0) / len(paths)
    return {"full_ms": 1000 / full, "reduced_ms": 1000 / reduced, "reduced_cpu_ms": cpu}


def index_contents(index_dir: Path):
    from simlib.index import open_index

    index = open_index(index_dir)
    records = sorted((r.id, r.path) for r in index.records())
    return records, index.vectors_of([r[0] for r in records])


def killed_run(root: Path, out: Path, size: int, chunk: int, n_files: int) -> float:
    """Start an index run in another process and SIGKILL it once half its chunks are on disk; returns when."""
    from simlib.photos.store import work_dir

    env = {**os.environ, "PYTHONPATH": str(common.REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(root), str(out), str(size), str(chunk)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    half = max(1, -(-n_files // chunk) // 2)
    t0 = time.perf_counter()
    while proc.poll() is None:
        if len(list(work_dir(out).glob("run-*/chunk-*.npz"))) >= half:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    return time.perf_counter() - t0


def startup(index_dir: Path, query: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(common.REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", STARTUP_SCRIPT, str(index_dir), query], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    loaded, first, peak, rss, n, kind = out.stdout.split()
    return {
        "n": int(n), "kind": kind, "load_s": float(loaded), "first_query_s": float(first),
        "peak_mib": float(peak), "rss_mib": float(rss),
    }  # fmt: skip


def big_index(index_dir: Path, out: Path, n: int, seed: int) -> Path:
    """A ``n``-image index with the real index's model: its vectors tiled with noise, its records' paths reused."""
    from simlib.config import IndexConfig
    from simlib.index import Record, VectorIndex
    from simlib.search import Searcher

    small = Searcher.load(index_dir)
    records = small.index.records()
    base = small.index.vectors_of([r.id for r in records])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(base), n)
    vectors = base[pick] + rng.normal(0, 0.02, (n, base.shape[1])).astype(np.float32)
    big = VectorIndex.build(
        vectors, [Record(id=i, path=records[j].path, label=None) for i, j in enumerate(pick)], IndexConfig()
    )
    big.manifest = big.manifest.replace(model_fingerprint=small.fingerprint)
    Searcher(small.embedder, big, check=False).save(out, reuse_model=index_dir / "model")
    return out


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="originals in the folder (copies come on top)")
    p.add_argument("--side", type=int, nargs=2, default=[3000, 4000], metavar=("MIN", "MAX"))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--chunk", type=int, default=256, help="images per chunk on disk")
    p.add_argument("--big", type=int, default=100_000, help="images in the start-up index made from the real one")
    p.add_argument("--gen-workers", type=int, default=2)
    p.add_argument(
        "--kinds",
        choices=["camera", "all"],
        default="camera",
        help="camera: JPEGs (half EXIF-rotated); all: also PNG with alpha, CMYK, 16-bit, GIF, WebP, HEIC",
    )
    p.add_argument("--work", type=Path, default=Path("/tmp/simlib-bench-folder"), help="generated folders")
    p.add_argument(
        "--generate-only", action="store_true", help="write the folder and stop (measure when the machine is quiet)"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.n, args.side, args.big, args.chunk = 40, [300, 400], 2000, 32
        args.work = args.out / "folder-smoke-work"  # beside the result: a test's own temporary folder
    repeats = args.repeats or (1 if args.smoke else 3)
    common.setup_env()
    args.work.mkdir(parents=True, exist_ok=True)
    from simlib.config import ModelConfig
    from simlib.model import Embedder
    from simlib.photos.build import index_folder
    from simlib.photos.sync import sync_index

    root, reserve, gen = generate(args)
    print(f"folder: {gen['files']} files, {gen['bytes'] / 2**30:.2f} GiB (generated in {gen['generate_s']:.0f} s)")
    if args.generate_only:
        return gen
    model = Embedder.build(ModelConfig(image_size=args.image_size, weights="none", seed=0))
    rows: list[dict] = []
    load_before = os.getloadavg()
    fwd, fwd_cpu = forward_rate(model, args.batch_size, 256 if args.smoke else 1024, repeats)
    rows.append({"step": "forward (bare ResNet50, pre-decoded)", "images": 1024, "rate": fwd, "cpu_ms": fwd_cpu})
    from simlib.data.scan import scan_folder

    files = [f.path for f in scan_folder(root).files]
    originals = [f for f in files if "/junk/" not in f and "-" not in Path(f).stem]  # no copies, no junk
    dec = decode_ms(originals[:: max(1, len(originals) // 40)][:40], args.image_size)
    rows.append({"step": "decode + resize one photo, full size", "seconds": dec["full_ms"] / 1000})
    rows.append(
        {"step": "read, hash, decode + resize one photo, reduced (draft)", "seconds": dec["reduced_ms"] / 1000,
         "cpu_ms": dec["reduced_cpu_ms"]}
    )  # fmt: skip
    out = args.work / f"index-{args.n}{'-all' if args.kinds == 'all' else ''}"
    for d in (out, Path(str(out) + ".work")):
        shutil.rmtree(d, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    built = index_folder(model, root, out, batch_size=args.batch_size, chunk_size=args.chunk, progress=False)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows.append(
        {"step": "index the folder (end to end)", "images": built.indexed, "seconds": took,
         "rate": built.embedded / took, "cpu_ms": 1000 * cpu / built.embedded, "cores_used": cpu / took}
    )  # fmt: skip
    load_index = os.getloadavg()
    fwd_after, fwd_cpu_after = forward_rate(model, args.batch_size, 256 if args.smoke else 1024, repeats)
    rows.append({"step": "forward again, after indexing", "images": 1024, "rate": fwd_after, "cpu_ms": fwd_cpu_after})
    rows[3]["ratio"] = built.embedded / took / ((fwd + fwd_after) / 2)  # against the mean of both
    # With every core busy, the index rate is the forward rate times forward / (forward + decode) CPU ms per image.
    model_cpu = (fwd_cpu + fwd_cpu_after) / 2
    rows.append({"step": "ceiling when CPU-bound: forward / (forward + decode) CPU ms",
                 "ratio": model_cpu / (model_cpu + dec["reduced_cpu_ms"])})  # fmt: skip
    common.save_partial("folder", args, rows)
    rows += duplicates_rows(out, files, source_photos(common.product_table(), args.n + 100, args.seed), args.seed)
    # resume after kill -9 at ~50 %
    resumed_out = args.work / f"index-{args.n}-resumed"
    for d in (resumed_out, Path(str(resumed_out) + ".work")):
        shutil.rmtree(d, ignore_errors=True)
    killed_at = killed_run(root, resumed_out, args.image_size, args.chunk, len(files))
    t0 = time.perf_counter()
    again = index_folder(model, root, resumed_out, batch_size=args.batch_size, chunk_size=args.chunk, progress=False)
    rest = time.perf_counter() - t0
    ref_records, ref_vectors = index_contents(out)
    records, vectors = index_contents(resumed_out)
    same = records == ref_records and np.array_equal(vectors, ref_vectors)
    rows.append(
        {"step": "resume after kill -9 at ~50 %", "images": again.embedded, "seconds": rest,
         "resumed": again.resumed, "identical": same, "killed_after_s": killed_at}
    )  # fmt: skip
    # sync: +100 / -50
    shutil.rmtree(resumed_out, ignore_errors=True)
    added_dir = root / "added-by-bench"
    shutil.rmtree(added_dir, ignore_errors=True)
    shutil.copytree(reserve, added_dir)
    n_added = len(scan_folder(added_dir).files)
    removed_dir = args.work / "removed-by-bench"
    shutil.rmtree(removed_dir, ignore_errors=True)
    removed_dir.mkdir()
    victims = originals[:50]
    for f in victims:
        shutil.move(f, removed_dir / Path(f).name)
    try:
        t0 = time.perf_counter()
        report = sync_index(out)
        took = time.perf_counter() - t0
        rows.append(
            {"step": f"sync +{n_added} / -{len(victims)}", "images": report.embedded, "seconds": took,
             "added": report.added, "removed": report.removed, "unchanged": report.unchanged}
        )  # fmt: skip
        t0 = time.perf_counter()
        quiet = sync_index(out)
        rows.append(
            {
                "step": "sync, nothing changed (open, scan, compare)",
                "images": quiet.embedded,
                "seconds": time.perf_counter() - t0,
            }
        )
    finally:  # put the folder back as generated
        shutil.rmtree(added_dir, ignore_errors=True)
        for f in victims:
            shutil.move(removed_dir / Path(f).name, f)
    sync_index(out)
    # start-up: a fresh process, as the app opens its index
    query = files[0]
    big = big_index(out, args.work / f"index-big-{args.big}", args.big, args.seed)
    for folder, what in ((out, "the"), (big, "a")):
        s = startup(folder, query)
        step = f"start-up: open {what} {s['n']:,}-image index + 1 query"
        rows.append({"step": step, "images": s.pop("n"), "seconds": s.pop("first_query_s"), **s})
    shutil.rmtree(big, ignore_errors=True)
    ratio = rows[3]["ratio"]
    notes = [
        f"load average before / after indexing / at the end: {load_before[0]:.2f} / {load_index[0]:.2f} / "
        f"{os.getloadavg()[0]:.2f} (1-minute) on {os.cpu_count()} cores",
        f"index rate {ratio:.2f}x the bare forward rate (goal {GOAL_RATIO}x); with every core busy at most "
        f"{rows[5]['ratio']:.2f}x (decode {dec['reduced_cpu_ms']:.1f} CPU ms per image beside the model's "
        f"{model_cpu:.1f})",
    ]
    return common.finish(
        "folder", args, rows, notes=notes, generated=gen,
        columns=["step", "images", "seconds", "rate", "ratio", "cpu_ms", "resumed", "identical", "load_s", "rss_mib",
                 "peak_mib", "kind", "precision_strict", "precision", "recall_copies", "recall_crops"],
    )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
