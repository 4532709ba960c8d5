"""Training throughput: is simlib's input pipeline the bottleneck of a triplet train step?

Interleaved rounds of the same compiled train step (minimal triplet loss written here, Adam) fed
two ways: ``cached`` from uint8 tensors decoded beforehand, and ``pipeline`` from simlib's tf.data
``image_pipeline`` decoding the JPEGs as it goes. Their ratio is what the input pipeline costs.

Then ``simlib.train.fit`` itself: with a full backbone (its augmenting P×K sampler and Keras' fit
loop, steady-state step time against the bare step), and the frozen-backbone path end to end (decode,
feature caching, head training) on the whole product set.

    python -m benchmarks.bench_train            # README scale: 64 px, 32 triplets per step
    python -m benchmarks.bench_train --smoke    # 32 px, frozen backbone, 1 step
"""

from __future__ import annotations

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


def step_timer():
    """A Keras callback recording when training began and when each batch ended."""
    import time

    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.began, self.ends = None, []

        def on_train_begin(self, logs=None):
            self.began = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

        def steady_step_s(self) -> float:
            """Median seconds per step, leaving out the first two (tracing, warm-up)."""
            gaps = np.diff(self.ends[1:])
            return float(np.median(gaps)) if len(gaps) else float("nan")

    return StepTimer()


def simlib_fit_row(table, size: int, triplets: int, steps: int, seed: int, backbone: str = "full") -> dict:
    """``simlib.train.fit`` with a full backbone: its augmenting P×K sampler feeding Keras' fit.

    The batch holds 3 × ``triplets`` images (P×K = ``triplets``·3/4 classes × 4), the images the
    bare step sees for ``triplets`` triplets, so triplet-equivalents/s = images/s / 3 compare step for step.
    ``backbone="frozen"`` (smoke runs) trains the head on cached features instead: no ResNet train graph
    to trace.
    """
    from simlib.config import ModelConfig
    from simlib.train import TrainConfig, fit

    timer = step_timer()
    p, k = max(2, 3 * triplets // 4), 4
    tc = TrainConfig(backbone=backbone, epochs=1, steps_per_epoch=steps + 2, classes_per_batch=p, images_per_class=k,
                     seed=seed)  # fmt: skip
    fit(table, ModelConfig(image_size=size, weights="none", seed=seed), tc, progress=False, callbacks=[timer])
    images_s = p * k / timer.steady_step_s()
    return {
        "feed": f"simlib.train.fit ({backbone} backbone, {'augmenting ' if backbone != 'frozen' else ''}P×K sampler)",
        "triplets_s": images_s / 3,
        "note": f"P×K = {p}×{k} images/step, batch-hard; triplets/s = images/s / 3; median of {steps} steps",
    }


def simlib_frozen_row(table, size: int, seed: int, epochs: int) -> dict:
    """The frozen-backbone path end to end: decode, cache backbone features, train the head."""
    import time

    from simlib.config import ModelConfig
    from simlib.train import RECOMMENDED_HEAD, TrainConfig, fit

    timer = step_timer()
    t0 = time.perf_counter()
    result = fit(
        table,
        ModelConfig(image_size=size, weights="none", seed=seed, **RECOMMENDED_HEAD),
        TrainConfig(seed=seed, epochs=epochs),
        progress=False,
        callbacks=[timer],
    )
    total = time.perf_counter() - t0
    return {
        "feed": "simlib.train.fit (frozen backbone, end to end)",
        "images": len(table),
        "seconds": total,
        "setup_s": timer.began - t0,
        "epochs": len(result.history.get("loss", [])),
        "note": "setup = decode + cache backbone features + first validation; the rest trains the head",
    }


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--triplets", type=int, default=32, help="triplets per step")
    p.add_argument("--steps", type=int, default=4, help="steps per round and feed")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the projection (fast to trace)")
    p.add_argument("--fit-images", type=int, default=1000, help="product-set images for the simlib.train.fit row")
    p.add_argument("--frozen-epochs", type=int, default=40, help="most epochs of the frozen end-to-end run")
    args = p.parse_args(argv)
    common.setup_env()
    if args.smoke:
        args.image_size, args.triplets, args.steps, args.freeze_backbone = 32, 4, 1, True
        args.fit_images, args.frozen_epochs = 200, 1
    repeats = args.repeats or (1 if args.smoke else 3)

    import tensorflow as tf

    from simlib.config import ModelConfig
    from simlib.data import image_pipeline, prepare_image
    from simlib.model import Embedder

    table = common.product_table()
    size, b = args.image_size, args.triplets
    embedder = Embedder.build(ModelConfig(image_size=size, weights="none", seed=args.seed))
    if args.freeze_backbone:
        embedder.backbone.trainable = False
    step = make_train_step(embedder.model)
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
    ]
    for r in rows:
        r.update(backbone="frozen" if args.freeze_backbone else "trained")
    print(common.table(rows), flush=True)
    subset = table.subset(np.random.default_rng(args.seed).permutation(len(table))[: args.fit_images])
    backbone = "frozen" if args.smoke else "full"
    fit_row = simlib_fit_row(subset, size, b, max(args.steps, 3), args.seed, backbone)
    rows.append({**fit_row, "ratio": fit_row["triplets_s"] / cached_rate, "backbone": backbone})
    print(common.table(rows[-1:]), flush=True)
    full = table if not args.smoke else subset
    rows.append({**simlib_frozen_row(full, size, args.seed, args.frozen_epochs), "backbone": "frozen"})
    for r in rows:
        r.update(image_px=size, triplets_per_step=b)
    notes = [
        "ratio = triplets/s against the bare step fed cached tensors (1.0: the input is not the bottleneck)",
        "simlib.train.fit rows add Keras' fit loop, batch-hard mining and augmentation to the input",
    ]
    return common.finish("train", args, rows, samples=res, notes=notes)


if __name__ == "__main__":
    main(sys.argv[1:])
