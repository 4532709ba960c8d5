"""The ``simlib`` command line: index, search, eval, explain, calibrate, add, remove, train, compare.

Exit codes: 0 success, 1 a user error (one line on stderr saying what to do), 2 bad usage,
3 done, but some images could not be read (each listed on stderr with its reason).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from simlib.errors import SimlibError

EXIT_PARTIAL = 3  # the command finished, but skipped unreadable images


# ----------------------------------------------------------------------------- shared options
def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", metavar="DIR", help="a model folder saved by simlib (carries its own image size)")
    g.add_argument(
        "--weights",
        default="auto",
        metavar="auto|imagenet|none|PATH",
        help="backbone weights when no --model is given (default: auto = ImageNet if it can be had, else untrained)",
    )
    g.add_argument("--image-size", type=int, metavar="N", help="input side in pixels (default 64)")
    g.add_argument("--embedding-dim", type=int, default=128, metavar="D", help="embedding size (default 128)")
    g.add_argument(
        "--precision",
        choices=["float32", "mixed_bfloat16"],
        help="compute precision (default float32; mixed_bfloat16 is faster on CPUs with AVX-512 BF16 / AMX)",
    )


def _add_data_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--data",
        required=required,
        metavar="DIR",
        help="image folder (product layout, class sub-folders or flat) or 'fashion-mnist'; "
        "default: $SIMLIB_DATA, ./data or ../shared/data",
    )
    p.add_argument("--label-column", default="articleType", help="product layout: styles.csv label column")


def _add_backend_options(p: argparse.ArgumentParser, search: bool = False) -> None:
    g = p.add_argument_group("backend")
    g.add_argument(
        "--backend",
        choices=["faiss", "milvus"],
        default=None if search else "faiss",
        help="checked against the index's manifest" if search else "faiss (in-process, default) or milvus",
    )
    g.add_argument(
        "--uri",
        metavar="URI",
        help="Milvus: a path ending in .db (Milvus Lite) or http://host:19530 (token in $MILVUS_TOKEN)"
        + ("; default: the manifest's" if search else ""),
    )


def _parse_filters(items: Sequence[str] | None) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SimlibError(f"--filter takes KEY=VALUE (e.g. baseColour=Blue), not {item!r}")
        filters.setdefault(key, []).append(value)
    return filters


def get_model(args: argparse.Namespace):
    """The :class:`~simlib.model.Embedder` named by ``--model``, else a fresh one from ``--weights``."""
    from simlib.model import open_embedder

    return open_embedder(
        args.model,
        image_size=args.image_size,
        weights=args.weights,
        embedding_dim=args.embedding_dim,
        precision=getattr(args, "precision", None),
    )


def get_table(args: argparse.Namespace, materialize: bool = False):
    """Load ``--data`` (or the default data); Fashion-MNIST is written out as PNGs when files are needed."""
    from simlib.data import cache_dir, default_data_spec, load_dataset
    from simlib.data import materialize as write_pngs

    spec = args.data or default_data_spec()
    table = load_dataset(spec, label_column=args.label_column)
    if materialize and table.paths is None:
        name = spec.replace(":", "-")
        table = write_pngs(table, cache_dir() / name)
    return table


# ----------------------------------------------------------------------------- commands
def cmd_index(args: argparse.Namespace) -> int:
    from simlib.config import IndexConfig
    from simlib.search import Searcher

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
        info = searcher.describe()
    finally:
        searcher.close()
    elapsed = time.perf_counter() - t0
    _report_skipped(table, result.skipped)
    print(
        f"indexed {info['gallery_size']} images from {table.name} in {elapsed:.1f} s "
        f"({info['gallery_size'] / max(elapsed, 1e-9):.0f} img/s), skipped {len(result.skipped)}; "
        f"{info['backend']} {info['index_kind']} index, {info['image_size']} px, weights {info['weights']} -> {out}"
    )
    print(f"done: {info['gallery_size']} indexed, {len(result.skipped)} skipped")
    return EXIT_PARTIAL if result.skipped else 0


def _report_skipped(table, skipped: dict[int, str]) -> None:
    """One stderr line per unreadable image: its path and why."""
    for row, reason in skipped.items():
        source = str(table.source(row))
        # open_image's reasons already start with the path
        print(f"skipped {reason}" if reason.startswith(source) else f"skipped {source}: {reason}", file=sys.stderr)


def cmd_search(args: argparse.Namespace) -> int:
    from simlib.data import open_image
    from simlib.search import Searcher, format_hits, no_good_match, unsupported_note

    open_image(args.image)  # a bad query fails before the model loads
    if args.backend:
        from simlib.index import read_manifest

        have = read_manifest(args.index).backend
        if have != args.backend:
            raise SimlibError(f"{args.index} is a {have} index, not {args.backend}: drop --backend or fix --index")
    searcher = Searcher.load(args.index, model_dir=args.model, uri=args.uri, mmap=args.mmap)
    try:
        hits = searcher.query(
            args.image,
            k=args.k,
            filters=_parse_filters(args.filter),
            exclude_self=args.exclude_self,
            collapse_duplicates=args.collapse,
        )
        threshold, calibration = searcher.threshold, searcher.calibration
    finally:
        searcher.close()
    nothing_good = threshold is not None and no_good_match(hits)
    merged = sum(h.duplicates for h in hits)
    if args.json:
        body = {"query": str(args.image), "hits": [h.to_dict() for h in hits]}
        body.update(threshold=threshold, no_good_match=nothing_good, merged=merged)
        print(json.dumps(body, ensure_ascii=False))
        return 0
    if not hits:
        print("no results (filters matched nothing?)")
        return 0
    if nothing_good:
        print(f"no good match: the best score {hits[0].score:.3f} is under the calibrated threshold {threshold:.3f}")
        print("closest (weak) results:")
    print(format_hits(hits, collapse=args.collapse is not None))
    if args.collapse is not None:
        print(f"merged {merged} near-duplicate{'s' * (merged != 1)} (cosine >= {args.collapse})")
    if calibration is not None and threshold is None:
        print(unsupported_note(calibration))
    return 0


def _gallery_image(searcher, ref: str) -> str:
    """A gallery id or an image path -> an image path."""
    from pathlib import Path

    if ref.isdigit() and not Path(ref).exists():
        path = searcher.index.record(int(ref)).path
        if path is None:
            raise SimlibError(f"gallery id {ref} has no image file")
        return path
    return ref


def cmd_explain(args: argparse.Namespace) -> int:
    from simlib.data import open_image
    from simlib.explain import explain_figure, similarity_maps
    from simlib.search import Searcher

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
    from simlib.calibrate import calibrate_threshold
    from simlib.search import Searcher

    searcher = Searcher.load(args.index)
    table = get_table(args, materialize=True) if args.data else None
    info = calibrate_threshold(
        searcher, table, target=args.target, percentile=args.percentile, seed=args.seed, progress=not args.quiet
    )
    searcher.save_updated(args.index)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"threshold {info['score']:.4f} ({info['method']}, {info['n_queries']} validation queries) -> {args.index}")
    if info["precision"] is not None:
        print(f"top-1 same-class precision above it: {info['precision']:.3f} (target {info['target']})")
    print(f"validation queries whose top-1 clears it: {info['coverage']:.0%}")
    if not info["reached"]:
        print(
            f"warning: no cut-off reaches precision {info['target']}; using the most precise one "
            "(train the model, or lower --target)",
            file=sys.stderr,
        )
    if not info["supported"]:
        print(
            "warning: this model cannot support the threshold (too few queries clear it): results will not be "
            "marked weak and 'no good match' is never said; train a model to get one",
            file=sys.stderr,
        )
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from simlib.search import Searcher

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
    from simlib.search import Searcher

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


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from simlib.data import split_table
    from simlib.metrics import evaluate

    table = get_table(args)
    if not table.has_labels:
        raise SimlibError(f"{table.name} has no labels: evaluation needs class sub-folders or a label column")
    if args.split == "test":
        table = split_table(table, seed=args.seed, by=args.by)["test"]
    result = get_model(args).embed_table(table, progress=not args.quiet)
    _report_skipped(table, result.skipped)
    labels = table.labels[result.rows].astype(str)
    parts = {"all": np.ones(len(labels), bool)}
    classes = _trained_classes(args.model)
    if classes:  # the classes the model trained on, scored apart from the others
        seen = np.isin(labels, sorted(classes))
        if seen.any() and (~seen).any():
            parts.update(seen=seen, unseen=~seen)
    scores = {}
    for part, mask in parts.items():
        e = result.embeddings[mask]
        scores[part] = evaluate(e, labels[mask], e, labels[mask], ref_includes_query=True)
        scores[part].update(split=args.split, by=args.by, seed=args.seed, data=table.name, classes=part)
    if args.json:
        print(json.dumps(scores["all"] if len(parts) == 1 else scores))
        return EXIT_PARTIAL if result.skipped else 0
    for part, s in scores.items():
        which = (
            "" if part == "all" else f", the {part} classes ({'trained on' if part == 'seen' else 'never trained on'})"
        )
        print(
            f"{table.name}, split {args.split} ({args.by}-disjoint, seed {args.seed}){which}, {s['n_queries']} queries"
        )
        for key in ("recall@1", "recall@5", "recall@10", "map@r"):
            print(f"  {key:<10} {s[key]:.4f}")
    return EXIT_PARTIAL if result.skipped else 0


def _trained_classes(model_dir: str | None) -> tuple[str, ...] | None:
    """The classes a saved model trained on, from its training.json: () for a label-free run, None
    when unknown (no record, or a run from before they were recorded)."""
    from pathlib import Path

    from simlib.train import TRAINING_FILE, TrainingRecord

    if not model_dir or not (Path(model_dir) / TRAINING_FILE).is_file():
        return None
    record = TrainingRecord.load(model_dir)
    return record.classes if record.labels_used else ()


def cmd_train(args: argparse.Namespace) -> int:
    from simlib.config import DEFAULT_IMAGE_SIZE, ModelConfig
    from simlib.model import resolve_weights
    from simlib.train import TrainConfig, fit, recommended_head

    table = get_table(args, materialize=True)
    train_config = TrainConfig(
        mode=args.mode,
        backbone=args.backbone,
        mining=args.mining,
        margin=args.margin,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        classes_per_batch=args.classes_per_batch,
        images_per_class=args.images_per_class,
        learning_rate=args.learning_rate,
        minutes=args.minutes,
        split_by=args.split_by,
        val_classes=args.val_classes,
        select_on=args.select_on,
        seed=args.seed,
        feedback_weight=args.feedback_weight,
    )
    weights = resolve_weights(args.weights)
    head = recommended_head(weights)  # depends on whether the backbone is pretrained
    if args.head_hidden is not None:
        head["head_hidden"] = args.head_hidden
    model_config = ModelConfig(
        image_size=args.image_size or DEFAULT_IMAGE_SIZE,
        embedding_dim=args.embedding_dim,
        weights=weights,
        precision=args.precision or "float32",
        seed=args.seed,
        **head,
    )
    start = None
    if args.model:  # continue training a saved model
        from simlib.model import Embedder

        start = Embedder.load(args.model)
    result = fit(
        table, model_config, train_config, out=args.out, progress=not args.quiet, embedder=start, feedback=args.feedback
    )
    summary = {"out": str(result.out), **result.summary()}
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"trained on {table.name}: best epoch {result.best_epoch}, val Recall@1 {result.best_val_recall:.4f}"
            + (
                ""
                if result.best_val_unseen_recall is None
                else f", held-out classes {result.best_val_unseen_recall:.4f} (selected on {result.select_on})"
            )
            + f", {result.seconds:.0f} s -> {result.out}"
        )
    if result.collapsed:
        print("warning: the saved embeddings look collapsed (see the collapse monitor in history.csv)", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from simlib.config import DEFAULT_IMAGE_SIZE, ModelConfig
    from simlib.evaluation import compare, format_table, save_results
    from simlib.model import Embedder, resolve_weights

    table = get_table(args)
    models, class_models = {}, {}
    trained = Embedder.load(args.model) if args.model else None
    if trained is not None:
        base = trained.config
    else:
        base = ModelConfig(
            image_size=args.image_size or DEFAULT_IMAGE_SIZE,
            embedding_dim=args.embedding_dim,
            weights=resolve_weights(args.weights),
            precision=getattr(args, "precision", None) or "float32",
        )
    untrained = ModelConfig(
        image_size=base.image_size,
        embedding_dim=base.embedding_dim,
        weights=base.weights,
        seed=base.seed,
        precision=base.precision,
    )
    models["untrained"] = Embedder.build(untrained)
    if trained is not None:
        models["trained"] = trained
    trained_classes: dict[str, tuple[str, ...]] = {}  # fingerprint -> classes; a model missing is unknown
    meta = {"data": table.name, "seed": args.seed, "model": args.model, "class_model": args.class_model}
    if args.class_model:
        class_models["trained"] = Embedder.load(args.class_model)
    for folder, embedder in ((args.model, trained), (args.class_model, class_models.get("trained"))):
        classes = _trained_classes(folder)
        if embedder is not None and classes is not None:
            trained_classes[embedder.fingerprint] = classes
    if not args.class_model and trained is not None and trained.config.trained:
        from simlib.data import split_table

        test_classes = set(split_table(table, seed=args.seed, by="class")["test"].labels.astype(str))
        if trained.fingerprint not in trained_classes or test_classes & set(trained_classes[trained.fingerprint]):
            class_models["trained"] = None  # it trained on those classes: the class split is not its test
            meta["note"] = (
                "class split without the trained model (it trained on those classes, or they are unknown): "
                "give --class-model, a model trained with --split-by class"
            )
    rows = compare(
        table,
        models,
        class_models=class_models,
        trained_classes=trained_classes,
        seed=args.seed,
        progress=not args.quiet,
    )
    if args.out:
        save_results(rows, args.out, meta)
    print(json.dumps({"rows": rows, "meta": meta}) if args.json else format_table(rows))
    if "note" in meta and not args.json:
        print(f"note: {meta['note']}")
    if args.out and not args.json:
        print(f"saved {args.out}/results.json and results.csv")
    return 0


def cmd_product_subset(args: argparse.Namespace) -> int:
    from simlib.product_subset import rebuild_product_subset

    done = rebuild_product_subset(args.kaggle, args.out, ids=args.ids)
    print(f"wrote {done['images']:,} images of {done['classes']} classes to {args.out} (styles.csv + images/)")
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    from simlib import __version__

    parser = argparse.ArgumentParser(prog="simlib", description="Visual similarity search without tags or labels.")
    parser.add_argument("--version", action="version", version=f"simlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="embed every image under a folder and write a persisted index")
    _add_data_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="index folder to write (e.g. artifacts/index)")
    p.add_argument("--kind", default="auto", choices=["auto", "flat", "hnsw", "ivfpq"], help="index kind")
    _add_backend_options(p)
    p.add_argument(
        "--collection", metavar="NAME", help="Milvus collection name (default simlib_gallery; replaced if it exists)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_options(p)
    p.set_defaults(func=cmd_index)

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
    _add_backend_options(p, search=True)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("explain", help="heat maps of the regions that make two images similar")
    p.add_argument("query", help="query image file")
    p.add_argument("result", help="result image file, or a gallery id of --index")
    p.add_argument("--index", metavar="DIR", help="index folder: its model explains (and ids resolve)")
    p.add_argument("--out", default="explain.png", metavar="PNG", help="figure to write (default explain.png)")
    p.add_argument("--method", default="features", choices=["features", "gradcam"], help="map method")
    _add_model_options(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("calibrate", help='calibrate the "no good match" score threshold of an index')
    p.add_argument("--index", required=True, metavar="DIR", help="index folder (the threshold is saved in it)")
    _add_data_options(p)
    p.add_argument("--target", type=float, default=0.9, help="top-1 same-class precision to reach (default 0.9)")
    p.add_argument("--percentile", type=float, default=5.0, help="no labels: near-copy score percentile (default 5)")
    p.add_argument("--seed", type=int, default=0, help="validation split seed")
    p.add_argument("--json", action="store_true", help="print the threshold entry as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("add", help="add images (files or folders) to an index without rebuilding it")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    p.add_argument("--index", required=True, metavar="DIR", help="index folder to update")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("remove", help="remove images from an index by gallery id or path")
    p.add_argument("items", nargs="+", metavar="ID", help="gallery ids or indexed image paths")
    p.add_argument("--index", required=True, metavar="DIR", help="index folder to update")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("eval", help="Recall@1/5/10 and mAP@R on a labelled dataset")
    _add_data_options(p)
    p.add_argument("--split", default="test", choices=["test", "all"], help="test split, or leave-one-out over all")
    p.add_argument("--by", default="image", choices=["image", "class"], help="image- or class-disjoint split")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("train", help="train the embedding model with triplet loss (labels or label-free)")
    _add_data_options(p, required=True)
    p.add_argument("--mode", required=True, choices=["labels", "self"], help="labels: P×K mining; self: no labels")
    p.add_argument("--out", required=True, metavar="DIR", help="model folder to write (e.g. artifacts/model)")
    p.add_argument(
        "--backbone",
        default="frozen",
        choices=["frozen", "partial", "full"],
        help="frozen (default): cache backbone features, train the head in seconds; partial: conv5 too; full: all",
    )
    p.add_argument("--epochs", type=int, default=40, metavar="N", help="most epochs (default 40; early stopping)")
    p.add_argument("--minutes", type=float, default=0, metavar="M", help="time budget for the whole run")
    p.add_argument("--seed", type=int, default=0, help="seeds split, sampler, augmentation and weights")
    p.add_argument(
        "--mining",
        default="",
        choices=["hard", "semihard", "all"],
        help="online triplet mining (default: hard with labels, all in self mode)",
    )
    p.add_argument("--margin", type=float, default=0.2, help="triplet margin (default 0.2)")
    p.add_argument("--steps-per-epoch", type=int, default=0, metavar="N", help="0: one pass over the images")
    p.add_argument("--classes-per-batch", type=int, default=16, metavar="P", help="P in P×K (images in self mode)")
    p.add_argument("--images-per-class", type=int, default=4, metavar="K", help="K in P×K (views in self mode)")
    p.add_argument("--learning-rate", type=float, default=0.0, metavar="LR", help="0: 1e-3 frozen, 1e-4 otherwise")
    p.add_argument("--head-hidden", type=int, metavar="N", help="hidden layer width of the head (0: linear head)")
    p.add_argument("--split-by", default="image", choices=["image", "class"], help="which held-out split to keep")
    p.add_argument(
        "--val-classes",
        type=float,
        default=0.2,
        metavar="F",
        help="labels mode: share of the training classes held out whole for the class-disjoint validation "
        "(default 0.2; 0: none)",
    )
    p.add_argument(
        "--select-on",
        default="unseen",
        choices=["seen", "unseen", "mean"],
        help="labels mode: the validation Recall@1 that picks the kept epoch and drives early stopping: "
        "image-disjoint (seen classes), class-disjoint (held-out classes, the default) or their mean",
    )
    p.add_argument(
        "--feedback",
        metavar="FILE",
        help="also train on user feedback (a feedback folder or its feedback.jsonl): queries as anchors, "
        "results marked similar as positives, not similar as hard negatives; with --model DIR it refines that model",
    )
    p.add_argument("--feedback-weight", type=float, default=1.0, metavar="W", help="weight of the feedback loss")
    p.add_argument("--json", action="store_true", help="print the training summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_model_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="before/after table: pixels, untrained and trained models on held-out splits")
    _add_data_options(p)
    p.add_argument("--class-model", metavar="DIR", help="model trained with --split-by class, for the class split")
    p.add_argument("--out", metavar="DIR", help="write results.json and results.csv here")
    p.add_argument("--seed", type=int, default=0, help="split seed (the one training used)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_model_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "product-subset",
        help="rebuild the course's product subset (fashion-product-images-small/) from a Kaggle download",
    )
    p.add_argument("--kaggle", required=True, metavar="DIR", help="the unzipped Kaggle download (styles.csv + images/)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new folder to write")
    p.add_argument("--ids", metavar="FILE", help="ids to copy, one a line (default: the 4,888 ids the course uses)")
    p.set_defaults(func=cmd_product_subset)
    return parser


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def _print_any_file_name() -> None:
    # File names that are not valid UTF-8 reach Python as lone surrogates; print their original bytes
    # instead of failing with UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        utf8 = (getattr(stream, "encoding", "") or "").lower().replace("-", "") == "utf8"
        if utf8 and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_tensorflow()
    _print_any_file_name()
    try:
        return int(args.func(args) or 0)
    except SimlibError as e:
        print(f"simlib: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("simlib: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
