"""The gallery commands: ``index``, ``search``, ``explain``, ``calibrate``, ``add``, ``remove``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from simlib.cli.options import (
    EXIT_PARTIAL,
    add_backend_options,
    add_data_options,
    add_model_options,
    get_model,
    get_table,
    parse_filters,
    report_skipped,
)
from simlib.config import IndexConfig
from simlib.data import open_image
from simlib.errors import SimlibError
from simlib.index import read_manifest
from simlib.search import Searcher, calibrate_threshold, format_hits, no_good_match
from simlib.search.explain import explain_figure, similarity_maps
from simlib.search.gallery import calibrate_verdicts_of


def cmd_index(args: argparse.Namespace) -> int:
    from simlib.cli.photos import index_or_sync

    photos = index_or_sync(args)  # a plain folder: resumable, and a sync over an existing index
    if photos is not None:
        return photos
    table = get_table(args, materialize=True)
    model = get_model(args)
    t0 = time.perf_counter()
    searcher, result = Searcher.from_table(
        model,
        table,
        IndexConfig(kind=args.kind),
        progress=not args.quiet,
        batch_size=args.batch_size,
        backend=args.backend,
        uri=args.uri,
        collection=args.collection,
    )
    try:
        out = searcher.save(args.out)
        info = searcher.info()
    finally:
        searcher.close()
    elapsed = time.perf_counter() - t0
    report_skipped(table, result.skipped)
    print(
        f"indexed {info.gallery_size} images from {table.name} in {elapsed:.1f} s "
        f"({info.gallery_size / max(elapsed, 1e-9):.0f} img/s), skipped {len(result.skipped)}; "
        f"{info.backend} {info.index_kind} index, {info.image_size} px, weights {info.weights} -> {out}"
    )
    print(f"done: {info.gallery_size} indexed, {len(result.skipped)} skipped")
    return EXIT_PARTIAL if result.skipped else 0


def cmd_search(args: argparse.Namespace) -> int:
    open_image(args.image)  # a bad query fails before the model loads
    if args.backend:
        have = read_manifest(args.index).backend
        if have != args.backend:
            raise SimlibError(f"{args.index} is a {have} index, not {args.backend}: drop --backend or fix --index")
    searcher = Searcher.load(args.index, model_dir=args.model, uri=args.uri, mmap=args.mmap)
    try:
        hits = searcher.query(
            args.image,
            k=args.k,
            filters=parse_filters(args.filter),
            exclude_self=args.exclude_self,
            collapse_duplicates=args.collapse,
        )
        threshold, note = searcher.threshold, searcher.unsupported_note()
        verdicts = searcher.verdicts
        checks_unlike = verdicts is not None and verdicts.checks_novelty
    finally:
        searcher.close()
    unlike = any(h.unlike_gallery for h in hits)
    below = threshold is not None and no_good_match(hits)
    nothing_good = (threshold is not None or checks_unlike) and (unlike or below)
    merged = sum(h.duplicates for h in hits)
    if args.json:
        body = {"query": str(args.image), "hits": [h.to_dict() for h in hits]}
        body.update(threshold=threshold, no_good_match=nothing_good, merged=merged)
        body["unlike_gallery"] = unlike if checks_unlike else None
        print(json.dumps(body, ensure_ascii=False))
        return 0
    if not hits:
        print("no results (filters matched nothing?)")
        return 0
    if unlike:
        print("no good match: this image looks unlike anything in the gallery")
        print("closest (weak) results:")
    elif nothing_good:
        print(f"no good match: the best score {hits[0].score:.3f} is under the calibrated threshold {threshold:.3f}")
        print("closest (weak) results:")
    print(format_hits(hits, collapse=args.collapse is not None))
    if args.collapse is not None:
        print(f"merged {merged} near-duplicate{'s' * (merged != 1)} (cosine >= {args.collapse})")
    if threshold is None and note:
        print(note)
    return 0


def _gallery_image(searcher, ref: str) -> str:
    """A gallery id or an image path -> an image path."""
    if ref.isdigit() and not Path(ref).exists():
        path = searcher.index.record(int(ref)).path
        if path is None:
            raise SimlibError(f"gallery id {ref} has no image file")
        return path
    return ref


def cmd_explain(args: argparse.Namespace) -> int:

    if not args.index and not args.model:
        raise SimlibError("give --index DIR (or --model DIR) so the maps come from the model that ranks the results")
    if args.index:
        searcher = Searcher.load(args.index, model_dir=args.model)
        embedder, result = searcher.embedder, _gallery_image(searcher, args.result)
    else:
        embedder, result = get_model(args), args.result
    open_image(args.query)
    open_image(result)
    maps = similarity_maps(embedder, args.query, result, method=args.method)
    score = float(embedder.embed_images([args.query, result]).prod(axis=0).sum())
    fig = explain_figure(args.query, result, maps, score)
    fig.savefig(args.out, dpi=120)
    print(f"cosine similarity {score:.3f}; heat maps ({args.method}) -> {args.out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    searcher = Searcher.load(args.index)
    table = get_table(args, materialize=True) if args.data else None
    threshold = calibrate_threshold(
        searcher, table, target=args.target, percentile=args.percentile, seed=args.seed, progress=not args.quiet
    )
    searcher.set_threshold(threshold)
    notes: list[str] = []
    calibrate_verdicts_of(searcher, notes.append)
    searcher.save_updated(args.index)
    if args.json:
        verdicts = searcher.verdicts
        print(json.dumps({**threshold.to_dict(), "verdicts": None if verdicts is None else verdicts.to_dict()}))
        return 0
    print(f"threshold {threshold.summary()} -> {args.index}")
    for note in notes:
        print(note)
    for note in threshold.warnings():
        print(f"warning: {note}", file=sys.stderr)
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    searcher = Searcher.load(args.index)
    added, skipped = searcher.add_images(args.images, progress=not args.quiet)
    for path, reason in skipped.items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if added:
        searcher.save_updated(args.index)
    ids = f" (ids {added[0]}..{added[-1]})" if added else ""
    print(f"added {len(added)} images{ids}, skipped {len(skipped)}; the gallery holds {len(searcher.index)}")
    known = ("already in the index", "given twice")
    return EXIT_PARTIAL if any(not reason.startswith(known) for reason in skipped.values()) else 0


def cmd_remove(args: argparse.Namespace) -> int:
    searcher = Searcher.load(args.index)
    ids, unknown = [], []
    for item in args.items:
        if item.isdigit():
            ids.append(int(item))
        else:
            found = searcher.ids_of_path(item)
            ids += found
            unknown += [] if found else [item]
    unknown += [str(i) for i in searcher.remove(ids)]
    removed = len(args.items) - len(unknown)
    if unknown:
        print(f"not in the index: {', '.join(unknown)}", file=sys.stderr)
    if not removed:
        raise SimlibError("nothing removed: give gallery ids (see `simlib search --json`) or indexed image paths")
    searcher.save_updated(args.index)
    print(f"removed {removed}; the gallery holds {len(searcher.index)}")
    return 0


def register_index(sub) -> None:
    """The ``index`` sub-command's options."""
    p = sub.add_parser("index", help="embed every image under a folder and write a persisted index")
    add_data_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="index folder to write (e.g. artifacts/index)")
    p.add_argument("--kind", default="auto", choices=["auto", "flat", "hnsw", "ivfpq"], help="index kind")
    add_backend_options(p)
    p.add_argument(
        "--collection", metavar="NAME", help="Milvus collection name (default simlib_gallery; replaced if it exists)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)
    p.set_defaults(func=cmd_index)


def register_search(sub) -> None:
    """The ``search`` sub-command's options."""
    p = sub.add_parser("search", help="top-K most similar gallery images to one image")
    p.add_argument("image", help="query image file")
    p.add_argument("--index", required=True, metavar="DIR", help="index folder written by `simlib index`")
    p.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    p.add_argument("--filter", action="append", metavar="KEY=VALUE", help="only results with this attribute")
    p.add_argument("--exclude-self", action="store_true", help="leave the query out when it is in the gallery")
    p.add_argument("--model", metavar="DIR", help="use this model instead of the index's own (must be the same)")
    p.add_argument("--json", action="store_true", help='print {"hits": [...]} as JSON')
    p.add_argument(
        "--collapse",
        nargs="?",
        type=float,
        const=0.97,
        metavar="THRESHOLD",
        help="merge results near-identical (cosine >= THRESHOLD, default 0.97) to a better one; fill the top-K",
    )
    p.add_argument(
        "--mmap",
        action="store_true",
        help="memory-map the FAISS index's vectors, not read them into memory (read-only; for indexes past RAM)",
    )
    add_backend_options(p, search=True)
    p.set_defaults(func=cmd_search)


def register_explain(sub) -> None:
    """The ``explain`` sub-command's options."""
    p = sub.add_parser("explain", help="heat maps of the regions that make two images similar")
    p.add_argument("query", help="query image file")
    p.add_argument("result", help="result image file, or a gallery id of --index")
    p.add_argument("--index", metavar="DIR", help="index folder: its model explains (and ids resolve)")
    p.add_argument("--out", default="explain.png", metavar="PNG", help="figure to write (default explain.png)")
    p.add_argument("--method", default="features", choices=["features", "gradcam"], help="map method")
    add_model_options(p)
    p.set_defaults(func=cmd_explain)


def register_calibrate(sub) -> None:
    """The ``calibrate`` sub-command's options."""
    p = sub.add_parser("calibrate", help='calibrate the "no good match" score threshold of an index')
    p.add_argument("--index", required=True, metavar="DIR", help="index folder (the threshold is saved in it)")
    add_data_options(p)
    p.add_argument("--target", type=float, default=0.9, help="top-1 same-class precision to reach (default 0.9)")
    p.add_argument("--percentile", type=float, default=5.0, help="no labels: near-copy score percentile (default 5)")
    p.add_argument("--seed", type=int, default=0, help="validation split seed")
    p.add_argument("--json", action="store_true", help="print the threshold entry as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate)


def register_add(sub) -> None:
    """The ``add`` sub-command's options."""
    p = sub.add_parser("add", help="add images (files or folders) to an index without rebuilding it")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    p.add_argument("--index", required=True, metavar="DIR", help="index folder to update")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_add)


def register_remove(sub) -> None:
    """The ``remove`` sub-command's options."""
    p = sub.add_parser("remove", help="remove images from an index by gallery id or path")
    p.add_argument("items", nargs="+", metavar="ID", help="gallery ids or indexed image paths")
    p.add_argument("--index", required=True, metavar="DIR", help="index folder to update")
    p.set_defaults(func=cmd_remove)
