"""The model commands: ``eval``, ``train``, ``compare``, ``product-subset``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from simlib.cli.options import EXIT_PARTIAL, add_data_options, add_model_options, get_model, get_table, report_skipped
from simlib.config import DEFAULT_IMAGE_SIZE, ModelConfig
from simlib.data import load_images, split_table
from simlib.data.product_subset import rebuild_product_subset
from simlib.errors import SimlibError
from simlib.evaluation import (
    HEAD_BEFORE_TRAINING,
    backbone_baseline,
    backbone_name,
    compare,
    head_before_training,
    paired_difference,
    pixel_embeddings,
    retrieval_scores,
    save_results,
)
from simlib.model import Embedder, resolve_weights


def cmd_eval(args: argparse.Namespace) -> int:
    table = get_table(args)
    if not table.has_labels:
        raise SimlibError(f"{table.name} has no labels: evaluation needs class sub-folders or a label column")
    if args.split == "test":
        table = split_table(table, seed=args.seed, by=args.by)["test"]
    model = get_model(args)
    result = model.embed_table(table, progress=not args.quiet)
    report_skipped(table, result.skipped)
    labels = table.labels[result.rows].astype(str)
    # the pixel baseline on the same images: every score comes with its paired difference from it
    pixels = pixel_embeddings(load_images(table.subset(result.rows), model.image_size, model.config.resize))
    parts = {"all": np.ones(len(labels), bool)}
    classes = _trained_classes(args.model)
    if classes:  # the classes the model trained on, scored apart from the others
        seen = np.isin(labels, sorted(classes))
        if seen.any() and (~seen).any():
            parts.update(seen=seen, unseen=~seen)
    scores = {}
    for part, mask in parts.items():
        e, p, lab = result.embeddings[mask], pixels[mask], labels[mask]
        scores[part], ours = retrieval_scores(e, lab, e, lab, ref_includes_query=True)
        base, theirs = retrieval_scores(p, lab, p, lab, ref_includes_query=True)
        scores[part].update(split=args.split, by=args.by, seed=args.seed, data=table.name, classes=part)
        scores[part]["vs_pixels"] = {
            metric: paired_difference(ours[key], theirs[key], metric=metric, a="model", b="pixels", part=part,
                                      split=args.split, seed=args.seed).to_dict() | {"pixels": base[metric]}
            for metric, key in (("recall@1", "hit@1"), ("map@r", "ap@r"))
        }  # fmt: skip
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
            line = f"  {key:<10} {s[key]:.4f}"
            if key in s["vs_pixels"]:
                d = s["vs_pixels"][key]
                line += (
                    f"   pixels {d['pixels']:.4f}; model - pixels {100 * d['difference']:+.1f} points "
                    f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}], p={d['p_value']:.3g}: {d['verdict']}"
                )
            print(line)
    return EXIT_PARTIAL if result.skipped else 0


def _trained_classes(model_dir: str | None) -> tuple[str, ...] | None:
    """The classes a saved model trained on, from its training.json: () for a label-free run, None
    when unknown (no record, or a run from before they were recorded)."""
    from simlib.train import TRAINING_FILE, TrainingRecord  # lazy: simlib.train loads Keras

    if not model_dir or not (Path(model_dir) / TRAINING_FILE).is_file():
        return None
    record = TrainingRecord.load(model_dir)
    return record.classes if record.labels_used else ()


def cmd_train(args: argparse.Namespace) -> int:
    from simlib.train import TrainConfig, fit, recommended_head  # lazy: simlib.train loads Keras

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


def _compare_models(args: argparse.Namespace, table) -> tuple[dict, dict, dict, dict]:
    """The methods ``simlib compare`` scores: the backbone as it comes, the head before training and the
    trained model (and their class-split twins), with the classes each trained or fitted on."""
    trained = Embedder.load(args.model) if args.model else None
    base = trained.config if trained is not None else ModelConfig(
        image_size=args.image_size or DEFAULT_IMAGE_SIZE,
        embedding_dim=args.embedding_dim,
        weights=resolve_weights(args.weights),
        precision=getattr(args, "precision", None) or "float32",
    )  # fmt: skip
    models: dict = {backbone_name(base.weights): backbone_baseline(base)}
    class_models: dict = {}
    known: dict = {}  # fingerprint -> classes; a trained model missing is unknown
    meta: dict = {"data": table.name, "seed": args.seed, "model": args.model, "class_model": args.class_model}
    labels = {str(c) for c in table.labels}
    for folder, slot in ((args.model, models), (args.class_model, class_models)):
        if not folder:
            continue
        embedder = trained if folder == args.model else Embedder.load(folder)
        classes = _trained_classes(folder)
        if classes is not None:
            known[embedder.fingerprint] = classes
        record = _record(folder)
        if record is not None and record.labels_used and set(record.classes or ()) <= labels:
            before = head_before_training(embedder, record, table)
            known[before.fingerprint] = classes
            slot[HEAD_BEFORE_TRAINING] = before
        else:
            meta.setdefault("notes", []).append(
                f"no '{HEAD_BEFORE_TRAINING}' row for {folder}: its training record is missing, label-free, "
                "or names classes this dataset does not have"
            )
        slot["trained"] = embedder
    if HEAD_BEFORE_TRAINING in class_models and HEAD_BEFORE_TRAINING not in models:
        models[HEAD_BEFORE_TRAINING] = None  # class split only
    if "trained" in models:  # keep the order: backbone, head before training, trained
        models["trained"] = models.pop("trained")
    if not args.class_model and trained is not None and trained.config.trained:
        test_classes = set(split_table(table, seed=args.seed, by="class")["test"].labels.astype(str))
        if trained.fingerprint not in known or test_classes & set(known[trained.fingerprint]):
            class_models.update({"trained": None, HEAD_BEFORE_TRAINING: None})  # not its test
            meta.setdefault("notes", []).append(
                "class split without the trained model (it trained on those classes, or they are unknown): "
                "give --class-model, a model trained with --split-by class"
            )
    return models, class_models, known, meta


def _record(folder: str | None):
    """The training record of a model folder, or None."""
    from simlib.train import TRAINING_FILE, TrainingRecord  # lazy: simlib.train loads Keras

    return TrainingRecord.load(folder) if folder and (Path(folder) / TRAINING_FILE).is_file() else None


def cmd_compare(args: argparse.Namespace) -> int:

    table = get_table(args)
    models, class_models, known, meta = _compare_models(args, table)
    result = compare(
        table,
        models,
        class_models=class_models,
        trained_classes=known,
        seed=args.seed,
        progress=not args.quiet,
    )
    if args.out:
        save_results(result, args.out, meta)
    if args.json:
        print(json.dumps({**result.to_json(), "meta": meta}))
        return 0
    print(result.table())
    print()
    print("paired differences on the same queries (seeded bootstrap 95% CI; p: McNemar for R@1, sign-flip for mAP@R)")
    print(result.differences_table())
    for note in meta.get("notes", []):
        print(f"note: {note}")
    if args.out:
        print(f"saved {args.out}/results.json and results.csv")
    return 0


def cmd_product_subset(args: argparse.Namespace) -> int:
    done = rebuild_product_subset(args.kaggle, args.out, ids=args.ids)
    print(f"wrote {done['images']:,} images of {done['classes']} classes to {args.out} (styles.csv + images/)")
    return 0


def register_eval(sub) -> None:
    """The ``eval`` sub-command's options."""
    p = sub.add_parser("eval", help="Recall@1/5/10 and mAP@R on a labelled dataset")
    add_data_options(p)
    p.add_argument("--split", default="test", choices=["test", "all"], help="test split, or leave-one-out over all")
    p.add_argument("--by", default="image", choices=["image", "class"], help="image- or class-disjoint split")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)
    p.set_defaults(func=cmd_eval)


def register_train(sub) -> None:
    """The ``train`` sub-command's options."""
    p = sub.add_parser("train", help="train the embedding model with triplet loss (labels or label-free)")
    add_data_options(p, required=True)
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
    add_model_options(p)
    p.set_defaults(func=cmd_train)


def register_compare(sub) -> None:
    """The ``compare`` sub-command's options."""
    p = sub.add_parser("compare", help="before/after table: pixels, untrained and trained models on held-out splits")
    add_data_options(p)
    p.add_argument("--class-model", metavar="DIR", help="model trained with --split-by class, for the class split")
    p.add_argument("--out", metavar="DIR", help="write results.json and results.csv here")
    p.add_argument("--seed", type=int, default=0, help="split seed (the one training used)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_model_options(p)
    p.set_defaults(func=cmd_compare)


def register_product_subset(sub) -> None:
    """The ``product-subset`` sub-command's options."""
    p = sub.add_parser(
        "product-subset",
        help="rebuild the course's product subset (fashion-product-images-small/) from a Kaggle download",
    )
    p.add_argument("--kaggle", required=True, metavar="DIR", help="the unzipped Kaggle download (styles.csv + images/)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new folder to write")
    p.add_argument("--ids", metavar="FILE", help="ids to copy, one a line (default: the 4,888 ids the course uses)")
    p.set_defaults(func=cmd_product_subset)
