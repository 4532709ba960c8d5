"""Training throughput: is simlib's input pipeline the bottleneck of a triplet train step?

Interleaved rounds of the same compiled train step (minimal triplet loss written here, Adam) fed
two ways: ``cached`` from uint8 tensors decoded beforehand, and ``pipeline`` from simlib's tf.data
``image_pipeline`` decoding the JPEGs as it goes. Their ratio is what the input pipeline costs.

The row for ``simlib.train`` (the training pipeline and its frozen-backbone path, being written in
another branch) is a marked placeholder until that module lands: see ``simlib_train_row``.

    python -m benchmarks.bench_train            # README scale: 64 px, 32 triplets per step
    python -m benchmarks.bench_train --smoke    # 32 px, frozen backbone, 1 step
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np

from benchmarks import common

MARGIN = 0.2


def triplet_rows(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` (anchor, positive, negative) row triples: positive of the anchor's class, negative not."""
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    usable = [c for c, rows in by_class.items() if len(rows) >= 2]
    out = np.empty((n, 3), np.int64)
    for i in range(n):
        c = usable[rng.integers(len(usable))]
        a, p = rng.choice(by_class[c], size=2, replace=False)
        neg = rng.integers(len(labels))
        while labels[neg] == c:
            neg = rng.integers(len(labels))
        out[i] = (a, p, neg)
    return out


def make_train_step(model, learning_rate: float = 1e-4):
    """A compiled step on a (3B, S, S, 3) uint8 batch laid out [anchors; positives; negatives]."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(images):
        with tf.GradientTape() as tape:
            emb = model(tf.cast(images, tf.float32), training=True)
            a, p, n = tf.split(emb, 3)
            d_ap = tf.reduce_sum(tf.square(a - p), axis=1)
            d_an = tf.reduce_sum(tf.square(a - n), axis=1)
            loss = tf.reduce_mean(tf.nn.relu(d_ap - d_an + MARGIN))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return step


def simlib_train_row() -> dict:
    """PLACEHOLDER(simlib.train): triplets/s of simlib's own training pipeline and the frozen-backbone path.

    Fill in once ``simlib/train.py`` is merged: time its train loop on the same triplets as below, and its
    frozen-backbone path end to end (feature caching + head training), and report them beside ``cached``.
    """
    present = importlib.util.find_spec("simlib.train") is not None
    return {
        "feed": "simlib.train (placeholder)",
        "triplets_s": None,
        "note": "simlib.train present: benchmark not written yet" if present else "simlib.train not merged yet",
    }


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--triplets", type=int, default=32, help="triplets per step")
    p.add_argument("--steps", type=int, default=4, help="steps per round and feed")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the projection (fast to trace)")
    args = p.parse_args(argv)
    common.setup_env()
    if args.smoke:
        args.image_size, args.triplets, args.steps, args.freeze_backbone = 32, 4, 1, True
    repeats = args.repeats or (1 if args.smoke else 3)

    import tensorflow as tf

    from simlib.config import ModelConfig
    from simlib.data import image_pipeline, prepare_image
    from simlib.model import build_embedding_model

    table = common.product_table()
    size, b = args.image_size, args.triplets
    model = build_embedding_model(ModelConfig(image_size=size, weights="none", seed=args.seed))
    if args.freeze_backbone:
        model.get_layer("resnet50").trainable = False
    step = make_train_step(model)
    triples = triplet_rows(table.labels, b * args.steps, args.seed)
    # per step: [b anchors; b positives; b negatives]
    flat = np.concatenate([triples[s * b : (s + 1) * b].T.reshape(-1) for s in range(args.steps)])
    cached = [
        tf.constant(np.stack([prepare_image(table.source(int(r)), size) for r in flat[s * 3 * b : (s + 1) * 3 * b]]))
        for s in range(args.steps)
    ]
    step(cached[0])  # trace

    def from_cache() -> float:
        return common.rate(b * args.steps, lambda: [step(x).numpy() for x in cached])

    def from_pipeline() -> float:
        ds = image_pipeline(table, size, batch_size=3 * b, rows=flat)
        return common.rate(b * args.steps, lambda: [step(images).numpy() for images, _, _ in ds])

    res = common.interleaved({"cached": from_cache, "pipeline": from_pipeline}, repeats, args.seed)
    cached_rate = common.median(res["cached"])
    rows = [
        {"feed": "cached tensors", "triplets_s": cached_rate, "ratio": 1.0},
        {
            "feed": "simlib image_pipeline",
            "triplets_s": common.median(res["pipeline"]),
            "ratio": common.median(res["pipeline"]) / cached_rate,
        },
        simlib_train_row(),
    ]
    for r in rows:
        r.update(image_px=size, triplets_per_step=b, backbone="frozen" if args.freeze_backbone else "trained")
    notes = ["ratio = pipeline-fed / cached-fed triplets/s (1.0: the input pipeline is not the bottleneck)"]
    return common.finish("train", args, rows, samples=res, notes=notes)


if __name__ == "__main__":
    main(sys.argv[1:])
