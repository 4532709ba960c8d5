"""The photo-folder commands: ``sync`` and ``duplicates``, and ``index`` over a plain folder
(resumable, and a sync when the index already exists)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from simlib.cli.options import EXIT_PARTIAL
from simlib.errors import SimlibError


def photo_folder(args: argparse.Namespace) -> Path | None:
    """``--data`` when it names a plain image folder (not the product layout, not Fashion-MNIST), else None."""
    from simlib.data import PRODUCT_SET_DIR

    if not getattr(args, "data", None) or str(args.data).startswith("fashion-mnist"):
        return None
    root = Path(args.data).expanduser()
    if not root.is_dir() or (root / "styles.csv").is_file() or (root / PRODUCT_SET_DIR / "styles.csv").is_file():
        return None
    return root


def report_scan_skips(skipped: dict[str, str]) -> int:
    """Print ``skipped PATH: reason`` for images that could not be read and ``ignored PATH: reason`` for
    entries that are not photos (hidden, other file types, loops); returns how many were skipped."""
    from simlib.data.scan import ignorable

    n = 0
    for path, reason in skipped.items():
        reason = reason[len(path) + 2 :] if reason.startswith(path + ": ") else reason
        if ignorable(reason):
            print(f"ignored {path}: {reason}", file=sys.stderr)
        else:
            print(f"skipped {path}: {reason}", file=sys.stderr)
            n += 1
    return n


def index_or_sync(args: argparse.Namespace) -> int | None:
    """``simlib index`` over a plain folder with the FAISS backend: a resumable build, or a sync when
    ``--out`` already holds an index. None: not a plain folder (the caller indexes as before)."""
    from simlib.index.manifest import MANIFEST_FILE

    folder = photo_folder(args)
    if folder is None or args.backend != "faiss":
        return None
    out = Path(args.out)
    if (out / MANIFEST_FILE).is_file():
        print(f"{out} already holds an index: syncing it with {folder} (delete it to rebuild)", file=sys.stderr)
        return _sync(out, folder, quiet=args.quiet, recalibrate=None, as_json=False)
    from simlib.cli.options import get_model
    from simlib.config import IndexConfig
    from simlib.photos.build import index_folder

    model = get_model(args)
    report = index_folder(
        model, folder, out, config=IndexConfig(kind=args.kind), batch_size=args.batch_size, progress=not args.quiet
    )
    n_skipped = report_scan_skips(report.skipped)
    cfg = model.config
    resumed = f", {report.resumed} from an interrupted run" if report.resumed else ""
    print(
        f"indexed {report.indexed} images from {folder} in {report.seconds:.1f} s "
        f"({report.embedded / max(report.seconds, 1e-9):.0f} img/s{resumed}), skipped {n_skipped}; "
        f"faiss index, {cfg.image_size} px, weights {cfg.weights} -> {report.index_dir}"
    )
    print(f"done: {report.indexed} indexed, {n_skipped} skipped")
    return EXIT_PARTIAL if n_skipped else 0


def _sync(index: Path, data, *, quiet: bool, recalibrate: bool | None, as_json: bool) -> int:
    from simlib.photos.sync import sync_index

    report = sync_index(index, data, progress=not quiet, recalibrate=recalibrate)
    n_skipped = report_scan_skips(report.skipped)
    if as_json:
        body = {k: v for k, v in report.__dict__.items() if k != "skipped"}
        body["skipped"] = n_skipped
        print(json.dumps(body))
    else:
        print(report.summary())
    return EXIT_PARTIAL if n_skipped else 0


def cmd_sync(args: argparse.Namespace) -> int:
    recalibrate = {"auto": None, "always": True, "never": False}[args.recalibrate]
    code = _sync(Path(args.index), args.data, quiet=args.quiet, recalibrate=recalibrate, as_json=args.json)
    if not args.watch:
        return code
    from simlib.photos.watch import FolderWatcher
    from simlib.search import Searcher

    searcher = Searcher.load(args.index)
    watcher = FolderWatcher(searcher, args.index, args.data, on_sync=lambda r: print(r.summary(), flush=True))
    watcher.start()
    print(f"watching {watcher.root} (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        watcher.stop()
        searcher.close()


def cmd_duplicates(args: argparse.Namespace) -> int:
    from simlib.photos.duplicates import Fingerprints, contact_sheet, move_duplicates, review_duplicates
    from simlib.photos.store import FolderState, work_dir
    from simlib.search import Searcher

    searcher = Searcher.load(args.index)
    try:
        fingerprints = Fingerprints(searcher.index, work_dir(args.index))
        review = review_duplicates(
            searcher,
            fingerprints,
            threshold=args.threshold,
            recalibrate=args.recalibrate,
            force=args.force,
            seed=args.seed,
        )
        if review.calibrated_now:
            searcher.save_updated(args.index)
        fingerprints.save()
    finally:
        searcher.close()
    groups, threshold, pixel_threshold = review.groups, review.threshold, review.pixel_threshold
    if args.json:
        print(json.dumps(review.to_dict()))
    else:
        how = "given" if args.threshold is not None else "calibrated"
        pixels = f" and pixel fingerprint >= {pixel_threshold:.4f}" if pixel_threshold is not None else ""
        print(f"{len(groups)} group(s) of near-duplicates at cosine >= {threshold:.4f} ({how}){pixels}")
        for n, g in enumerate(groups, 1):
            print(f"group {n}: keep {g.keep.path} ({g.keep.width}x{g.keep.height})")
            for m in g.others:
                print(f"    {m.score:.4f}  {m.path} ({m.width}x{m.height})")
    if args.sheet and groups:
        print(f"contact sheet -> {contact_sheet(groups, args.sheet)}", file=sys.stderr)
    if args.move_to and groups:
        state = FolderState.load(work_dir(args.index))
        if state is None:
            raise SimlibError(f"{args.index} does not record its photo folder: --move-to needs an index of a folder")
        moved = move_duplicates(groups, state.root, args.move_to)
        for src, dst in moved.items():
            print(f"moved {src} -> {dst}", file=sys.stderr)
        code = _sync(Path(args.index), None, quiet=True, recalibrate=None, as_json=False)
        return code
    return 0


def register_sync(sub) -> None:
    """The ``sync`` sub-command's options."""
    p = sub.add_parser("sync", help="bring an index in line with its photo folder: embed only what changed")
    p.add_argument("--index", required=True, metavar="DIR", help="index folder (built by `simlib index --data DIR`)")
    p.add_argument("--data", metavar="DIR", help="the photo folder (default: the one the index was built from)")
    p.add_argument(
        "--recalibrate",
        choices=["auto", "always", "never"],
        default="auto",
        help="refresh the calibrated threshold: auto = when over 10%% of the gallery changed or labels changed",
    )
    p.add_argument("--watch", action="store_true", help="keep running and sync a few seconds after each change")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sync)


def register_duplicates(sub) -> None:
    """The ``duplicates`` sub-command's options."""
    p = sub.add_parser("duplicates", help="groups of near-duplicate images with a suggested keep (nothing deleted)")
    p.add_argument("--index", required=True, metavar="DIR", help="index folder")
    p.add_argument(
        "--threshold", type=float, metavar="T", help="cosine that links two images (default: calibrated for the model)"
    )
    p.add_argument("--recalibrate", action="store_true", help="measure the model's threshold again")
    p.add_argument("--force", action="store_true", help="group even when the model cannot support the threshold")
    p.add_argument("--seed", type=int, default=0, help="calibration seed")
    p.add_argument("--json", action="store_true", help='print {"threshold", "groups": [{"keep", "others"}]}')
    p.add_argument("--sheet", metavar="PNG", help="write a contact sheet: one row per group, the keep first")
    p.add_argument(
        "--move-to", metavar="DIR", help="move the non-kept files there (relative paths kept), then sync the index"
    )
    p.set_defaults(func=cmd_duplicates)
