"""Quality bar for triplet training on the product set: pixels vs untrained vs trained.

Trains three models with the defaults of `simlib train` (frozen backbone, cached features, the head
of `simlib.train.recommended_head` for the weights policy): labels mode on the image split (for the
image-disjoint rows), labels mode on the class split (for the class-disjoint rows) and self mode
(label-free; near-duplicate rows), then prints the before/after table (pixels, the backbone as it comes,
each labels model's head before training, the trained models) with every paired difference, its
bootstrap interval, p-value and verdict with the test classes each
trained model saw ("seen") apart from those it never trained on ("unseen"), records the machine and
the run times, and writes JSON + CSV.

    SIMLIB_DATA=../shared/data python benchmarks/bench_training.py --out results/training
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="product set folder (default: the data root's)")
    ap.add_argument("--out", default="results/training", help="where models and results go")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--weights", default="none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=10.0, help="time budget per training run")
    return ap.parse_args()


def main() -> int:
    from simlib.config import ModelConfig
    from simlib.data import default_data_spec, load_dataset
    from simlib.evaluation import (
        HEAD_BEFORE_TRAINING,
        backbone_baseline,
        backbone_name,
        compare,
        head_before_training,
        save_results,
    )
    from simlib.model import resolve_weights
    from simlib.train import TrainConfig, TrainingRecord, fit, recommended_head

    args = parse_args()
    out = Path(args.out)
    table = load_dataset(args.data or default_data_spec())
    weights = resolve_weights(args.weights)
    model_cfg = ModelConfig(image_size=args.image_size, weights=weights, seed=args.seed, **recommended_head(weights))
    runs = {
        "labels-image": TrainConfig(mode="labels", split_by="image", seed=args.seed, minutes=args.minutes),
        "labels-class": TrainConfig(mode="labels", split_by="class", seed=args.seed, minutes=args.minutes),
        "self": TrainConfig(mode="self", seed=args.seed, minutes=args.minutes),
    }
    models, timings, classes, before = {}, {}, {}, {}
    for name, tc in runs.items():
        t0 = time.perf_counter()
        result = fit(table, model_cfg, tc, out=out / f"model-{name}", progress=True)
        timings[name] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history.get("loss", [])),
            "best_val_recall@1": result.best_val_recall,
            "collapsed": result.collapsed,
        }
        models[name] = result.embedder
        record = TrainingRecord.load(out / f"model-{name}")
        classes[result.embedder.fingerprint] = record.classes if record.labels_used else ()
        if record.labels_used:  # the same architecture and fitted statistics, no gradient step
            before[name] = head_before_training(result.embedder, record, table)
            classes[before[name].fingerprint] = record.classes
        print(f"{name}: {timings[name]}", flush=True)

    backbone = backbone_baseline(model_cfg)
    result = compare(
        table,
        {
            backbone_name(model_cfg.weights): backbone,
            HEAD_BEFORE_TRAINING: before["labels-image"],
            "trained (labels)": models["labels-image"],
            "trained (self)": models["self"],
        },
        # the self-mode model trained on the image split's images: not a class-disjoint result
        class_models={
            HEAD_BEFORE_TRAINING: before["labels-class"],
            "trained (labels)": models["labels-class"],
            "trained (self)": None,
        },
        trained_classes=classes,
        seed=args.seed,
        progress=True,
    )
    meta = {
        "data": table.name,
        "image_size": args.image_size,
        "weights": model_cfg.weights,
        "seed": args.seed,
        "command": " ".join(sys.argv),
        "train_runs": timings,
    }
    save_results(result, out, meta)
    print(result.table())
    print(result.differences_table())
    print(json.dumps(timings, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
