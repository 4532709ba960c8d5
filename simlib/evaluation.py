"""The evaluation protocol: before/after tables on held-out images and held-out classes.

Three kinds of embedding are compared on the same test images:

- ``pixels``: 16×16 thumbnails, flattened and L2-normalised (the baseline anything must beat);
- ``untrained``: a fresh simlib model (same backbone weights policy, image size and seed);
- ``trained``: a model from :func:`simlib.train.fit`.

Splits: ``image`` (image-disjoint test part, every class seen in training) and ``class``
(class-disjoint: the test classes were never trained on; metric learning's usual protocol).
Each test image queries the other test images (Recall@1/5/10, mAP@R). ``near-duplicate``
measures label-free retrieval: the query is an augmented copy of a test image, the target
its original among all test originals.
"""

from __future__ import annotations

import csv
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simlib.data import ImageTable, split_table
from simlib.errors import SimlibError

PIXEL_SIZE = 16
NEAR_DUP_SEED_OFFSET = 12345
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
COLUMNS = ("split", "method", "recall@1", "recall@5", "recall@10", "map@r", "n_queries")


def pixel_embeddings(images: np.ndarray, size: int = PIXEL_SIZE) -> np.ndarray:
    """Raw-pixel baseline: each uint8 (S, S, 3) image as an L2-normalised ``size``×``size`` thumbnail."""
    import tensorflow as tf

    small = tf.image.resize(np.asarray(images, np.float32), (size, size), method="area", antialias=True).numpy()
    flat = small.reshape(len(images), -1)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def model_embedder(embedder) -> Callable[[np.ndarray], np.ndarray]:
    """``images -> embeddings`` for an :class:`~simlib.model.Embedder`, in batches."""
    return lambda images: (
        np.concatenate([embedder.embed_batch(images[i : i + 128]) for i in range(0, len(images), 128)])
        if len(images)
        else np.zeros((0, 0), np.float32)
    )


def class_retrieval(embed: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray) -> dict:
    """Recall@1/5/10 and mAP@R, each image querying all the others (same class = relevant)."""
    from simlib.metrics import evaluate

    e = embed(images)
    return evaluate(e, labels, e, labels, ref_includes_query=True)


def near_duplicate_queries(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The seeded augmented copies used as near-duplicate queries (one per image)."""
    from simlib.samplers import Augmenter

    aug = Augmenter(images.shape[1], seed=seed + NEAR_DUP_SEED_OFFSET)
    return np.concatenate([aug(images[i : i + 256]) for i in range(0, len(images), 256)])


def near_duplicate_retrieval(
    embed: Callable[[np.ndarray], np.ndarray], images: np.ndarray, queries: np.ndarray | None = None, seed: int = 0
) -> dict:
    """Recall@K of finding each image's original from an augmented copy of it.

    Args:
        embed: ``images -> embeddings``.
        images: uint8 (N, S, S, 3) originals: the gallery.
        queries: their augmented copies (default: :func:`near_duplicate_queries`).
        seed: augmentation seed when ``queries`` is None.
    """
    from simlib.metrics import evaluate

    queries = near_duplicate_queries(images, seed) if queries is None else queries
    ids = np.arange(len(images))
    return evaluate(embed(queries), ids, embed(images), ids, ref_includes_query=False)


def compare(
    table: ImageTable,
    models: dict[str, Any],
    *,
    class_models: dict[str, Any] | None = None,
    seed: int = 0,
    splits: Sequence[str] = ("image", "class"),
    near_duplicates: bool = True,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The before/after table: pixels and each model on each split's test images.

    Args:
        table: a labelled dataset.
        models: name -> :class:`~simlib.model.Embedder` (``{"untrained": e0, "trained": e1}``), one image size.
        class_models: name -> model to use on the class-disjoint split instead (a model
            trained on the class split's training classes); names missing here use ``models``.
        seed: split and augmentation seed (the same one training used).
        splits: "image" and/or "class".
        near_duplicates: add the near-duplicate rows (image-disjoint test images).
        progress: print a line per split.

    Returns:
        One dict per (split, method) with the :data:`COLUMNS`.
    """
    from simlib.data import load_images

    if not table.has_labels:
        raise SimlibError(f"{table.name} has no labels: the comparison needs class sub-folders or a label column")
    sizes = {m.image_size for m in [*models.values(), *(class_models or {}).values()]}
    if len(sizes) > 1:
        raise SimlibError(f"the models to compare use different image sizes {sorted(sizes)}: compare like with like")
    size = sizes.pop() if sizes else 64
    rows: list[dict[str, Any]] = []

    def add(split: str, method: str, scores: dict) -> None:
        rows.append({"split": split, "method": method, **{c: scores[c] for c in COLUMNS[2:]}})

    for split in splits:
        test = split_table(table, seed=seed, by=split)["test"]
        if progress:
            print(f"evaluating {len(test)} {split}-disjoint test images", flush=True)
        images = load_images(test, size)
        add(split, "pixels", class_retrieval(pixel_embeddings, images, test.labels))
        for name, model in models.items():
            chosen = (class_models or {}).get(name, model) if split == "class" else model
            add(split, name, class_retrieval(model_embedder(chosen), images, test.labels))
        if near_duplicates and split == "image":
            queries = near_duplicate_queries(images, seed)
            add("near-duplicate", "pixels", near_duplicate_retrieval(pixel_embeddings, images, queries))
            for name, model in models.items():
                add("near-duplicate", name, near_duplicate_retrieval(model_embedder(model), images, queries))
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned plain-text table."""
    lines = [f"{'split':<15} {'method':<22} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'mAP@R':>6} {'queries':>7}"]
    for r in rows:
        lines.append(
            f"{r['split']:<15} {r['method']:<22} {r['recall@1']:6.3f} {r['recall@5']:6.3f} "
            f"{r['recall@10']:6.3f} {r['map@r']:6.3f} {r['n_queries']:>7}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where a measurement was taken."""
    import keras
    import tensorflow as tf

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def save_results(
    rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``results.json`` (rows + meta + machine) and ``results.csv`` into ``out_dir``."""
    from simlib.storage import save_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / RESULTS_JSON, {"rows": list(rows), "meta": meta or {}, "machine": machine()})
    with open(out / RESULTS_CSV, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({c: r[c] for c in COLUMNS})
    return out
