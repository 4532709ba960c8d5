"""Embedding throughput: simlib's pipeline against the raw forward (ceiling) and a per-image predict loop.

For each image size, interleaved round by round on the same product-set images:

- ``ceiling``: the compiled forward alone, on pre-decoded uint8 batches already in memory;
- ``simlib``: ``simlib.model.embed.embed_table`` (tf.data parallel JPEG decode + resize, forward, normalise);
- ``loop``: what most tutorials do: for each image, decode + resize, then ``model.predict(x[None])``;
- ``decode``: the input pipeline alone (no model), to show what decoding costs.

Also saves the product-set embeddings at the first size (``results/product-embeddings.npy``) for
``bench_index``'s real-data rows.

    python -m benchmarks.bench_embed            # README scale: 1,024 images at 64, 128, 224 px
    python -m benchmarks.bench_embed --smoke
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks import common

GOAL_CEILING = 0.9
GOAL_LOOP = 10.0


def run_size(table, size: int, batch_size: int, n_loop: int, repeats: int, seed: int) -> tuple[dict, dict]:
    """Interleaved throughputs at one image size; returns the table row and the raw samples."""
    from simlib.config import ModelConfig
    from simlib.data import image_pipeline, prepare_image
    from simlib.model import Embedder
    from simlib.model.embed import embed_table

    model = Embedder.build(ModelConfig(image_size=size, weights="none", seed=seed))
    n = len(table)
    x = np.stack([prepare_image(table.source(i), size) for i in range(n)])
    loop_rows = list(range(min(n_loop, n)))

    def ceiling() -> float:
        return common.rate(n, lambda: [model.embed_batch(x[i : i + batch_size]) for i in range(0, n, batch_size)])

    def simlib_pipeline() -> float:
        return common.rate(n, lambda: embed_table(model, table, batch_size=batch_size, progress=False))

    def loop() -> float:
        def run():
            for i in loop_rows:
                model.model.predict(prepare_image(table.source(i), size)[None].astype(np.float32), verbose=0)

        return common.rate(len(loop_rows), run)

    def decode() -> float:
        return common.rate(n, lambda: list(image_pipeline(table, size, batch_size=batch_size).as_numpy_iterator()))

    # warm-up: trace the compiled forward and predict's function, open the files once
    model.embed_batch(x[:batch_size])
    model.model.predict(x[:1].astype(np.float32), verbose=0)
    decode()
    res = common.interleaved(
        {"ceiling": ceiling, "simlib": simlib_pipeline, "loop": loop, "decode": decode}, repeats, seed
    )
    med = {k: common.median(v) for k, v in res.items()}
    # embed_batch's compiled function must have traced exactly once for all batch sizes
    traces = model.forward.experimental_get_tracing_count()
    row = {
        "image_px": size,
        "images": n,
        "batch": batch_size,
        "ceiling_img_s": med["ceiling"],
        "simlib_img_s": med["simlib"],
        "loop_img_s": med["loop"],
        "decode_img_s": med["decode"],
        "simlib/ceiling": med["simlib"] / med["ceiling"],
        "simlib/loop": med["simlib"] / med["loop"],
        "goal_ceiling_met": med["simlib"] / med["ceiling"] >= GOAL_CEILING,
        "goal_loop_met": med["simlib"] / med["loop"] >= GOAL_LOOP,
        "traces": traces,
    }
    return row, {"size": size, **res}


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,128,224")
    p.add_argument("--images", type=int, default=1024, help="product-set images (the first N by id)")
    p.add_argument("--loop-images", type=int, default=32, help="images for the slow per-image predict loop")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--save-embeddings", action="store_true", help="also embed the whole product set at the first size")
    args = p.parse_args(argv)
    common.setup_env()
    if args.smoke:
        args.sizes, args.images, args.loop_images, args.batch_size = "32", 24, 4, 8
    repeats = args.repeats or (1 if args.smoke else 3)
    full = common.product_table()
    table = full.subset(np.arange(min(args.images, len(full))))
    rows, samples = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        row, raw = run_size(table, size, args.batch_size, args.loop_images, repeats, args.seed)
        rows.append(row)
        samples.append(raw)
        print(common.table([row]), flush=True)
        common.save_partial("embed", args, rows)
    notes = [
        f"medians of {repeats} interleaved rounds; goals: simlib/ceiling >= {GOAL_CEILING}, simlib/loop >= {GOAL_LOOP}"
    ]
    if args.save_embeddings and not args.smoke:
        from simlib.config import ModelConfig
        from simlib.model import Embedder
        from simlib.model.embed import embed_table

        size = int(args.sizes.split(",")[0])
        model = Embedder.build(ModelConfig(image_size=size, weights="none", seed=args.seed))
        result = embed_table(model, full, progress=False)
        args.out.mkdir(parents=True, exist_ok=True)
        np.save(args.out / "product-embeddings.npy", result.embeddings)
        notes.append(f"saved {len(result.rows)} product-set embeddings at {size} px for bench_index")
    return common.finish("embed", args, rows, samples=samples, notes=notes)


if __name__ == "__main__":
    main(sys.argv[1:])
