"""mixed_bfloat16 against float32: forward speed-up and what it costs in retrieval quality.

Same weights under both policies (``Embedder.with_precision``). Speed: the compiled forward on
pre-decoded batches, interleaved. Cost, on the product set's held-out test split: cosine agreement
of each image's two embeddings, agreement of the top-1 neighbour, and Recall@1 under each.

    python -m benchmarks.bench_precision        # README scale: 64 / 128 / 224 px speed, quality at 64
    python -m benchmarks.bench_precision --smoke
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks import common


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,128,224", help="sizes for the speed comparison")
    p.add_argument("--quality-sizes", default="64", help="sizes for the quality comparison")
    p.add_argument("--images", type=int, default=128, help="images per speed round")
    p.add_argument("--quality-images", type=int, default=0, help="test-split images for quality (0: all)")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    common.setup_env()
    if args.smoke:
        args.sizes, args.quality_sizes, args.images, args.quality_images, args.batch_size = "32", "32", 16, 40, 8
    repeats = args.repeats or (1 if args.smoke else 3)

    from simlib.config import ModelConfig
    from simlib.data import prepare_image, split_table
    from simlib.evaluation.metrics import evaluate
    from simlib.model import Embedder, bfloat16_supported
    from simlib.model.embed import embed_table

    supported = bfloat16_supported()
    table = common.product_table()
    test = split_table(table, seed=args.seed)["test"]
    if args.quality_images:
        test = test.subset(np.random.default_rng(args.seed).permutation(len(test))[: args.quality_images])
    speed_sizes = [int(s) for s in args.sizes.split(",")]
    quality_sizes = [int(s) for s in args.quality_sizes.split(",")]
    rows = []
    for size in sorted(set(speed_sizes) | set(quality_sizes)):
        f32 = Embedder.build(ModelConfig(image_size=size, weights="none", seed=args.seed))
        bf16 = f32.with_precision("mixed_bfloat16")
        row = {"image_px": size, "bf16_native": supported}
        if size in speed_sizes:
            x = np.stack([prepare_image(table.source(i), size) for i in range(args.images)])
            for m in (f32, bf16):
                m.embed_batch(x[: args.batch_size])

            def forward(m, x=x):
                return common.rate(
                    len(x),
                    lambda: [m.embed_batch(x[i : i + args.batch_size]) for i in range(0, len(x), args.batch_size)],
                )

            cases = {"f32": lambda m=f32: forward(m), "bf16": lambda m=bf16: forward(m)}
            res = common.interleaved(cases, repeats, args.seed)
            row.update(
                float32_img_s=common.median(res["f32"]),
                bf16_img_s=common.median(res["bf16"]),
                speedup=common.median(res["bf16"]) / common.median(res["f32"]),
            )
        if size in quality_sizes:
            a = embed_table(f32, test, progress=False)
            b = embed_table(bf16, test, progress=False)
            cos = (a.embeddings * b.embeddings).sum(1)
            labels = test.labels[a.rows]
            ra = evaluate(a.embeddings, labels, a.embeddings, labels, ref_includes_query=True)
            rb = evaluate(b.embeddings, labels, b.embeddings, labels, ref_includes_query=True)
            sims_a, sims_b = a.embeddings @ a.embeddings.T, b.embeddings @ b.embeddings.T
            np.fill_diagonal(sims_a, -np.inf)
            np.fill_diagonal(sims_b, -np.inf)
            row.update(
                test_images=len(a.rows),
                cos_mean=float(cos.mean()),
                cos_min=float(cos.min()),
                top1_same=float((sims_a.argmax(1) == sims_b.argmax(1)).mean()),
                recall1_f32=ra["recall@1"],
                recall1_bf16=rb["recall@1"],
                recall1_diff=rb["recall@1"] - ra["recall@1"],
            )
        rows.append(row)
        print(common.table([row]), flush=True)
    notes = [
        "untrained backbone (weights=none: no network here for ImageNet weights): the quality cost is measured "
        "on random-init features; the same comparison applies to a trained model with this script",
    ]
    return common.finish("precision", args, rows, notes=notes)


if __name__ == "__main__":
    main(sys.argv[1:])
