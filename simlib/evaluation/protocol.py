"""The evaluation protocol: before/after tables on held-out images and held-out classes.

Three kinds of embedding are compared on the same test images:

- ``pixels``: 16×16 thumbnails, flattened and L2-normalised (the baseline anything must beat);
- ``untrained``: a fresh simlib model (same backbone weights policy, image size and seed);
- ``trained``: a model from :func:`simlib.train.fit`.

Splits: ``image`` (image-disjoint test part: most of its classes were trained on, those a
training run held out for validation were not) and ``class`` (class-disjoint: the test classes
were never trained on; metric learning's usual protocol, refused for a model that trained on
them). A trained model's seen and unseen test classes are scored apart, so that a gap between
them cannot hide in an average. Each test image queries the other test images of its part
(Recall@1/5/10, mAP@R). ``near-duplicate``
measures label-free retrieval: the query is an augmented copy of a test image, the target
its original among all test originals.
"""

from __future__ import annotations

import csv
import os
import platform
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simlib.data import ImageTable, split_table
from simlib.errors import SimlibError

PIXEL_SIZE = 16
NEAR_DUP_SEED_OFFSET = 12345
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
COLUMNS = ("split", "part", "method", "recall@1", "recall@5", "recall@10", "map@r", "n_queries")


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
    from simlib.evaluation.metrics import evaluate

    e = embed(images)
    return evaluate(e, labels, e, labels, ref_includes_query=True)


def near_duplicate_queries(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The seeded augmented copies used as near-duplicate queries (one per image)."""
    from simlib.train.samplers import Augmenter

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
    from simlib.evaluation.metrics import evaluate

    queries = near_duplicate_queries(images, seed) if queries is None else queries
    ids = np.arange(len(images))
    return evaluate(embed(queries), ids, embed(images), ids, ref_includes_query=False)


def compare(
    table: ImageTable,
    models: dict[str, Any],
    *,
    class_models: dict[str, Any] | None = None,
    trained_classes: Mapping[str, Collection[str] | None] | None = None,
    seed: int = 0,
    splits: Sequence[str] = ("image", "class"),
    near_duplicates: bool = True,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """The before/after table: pixels and each model on each split's test images, with the test
    classes a trained model saw in training ("seen") scored apart from those it did not ("unseen").

    Args:
        table: a labelled dataset.
        models: name -> :class:`~simlib.model.Embedder` (``{"untrained": e0, "trained": e1}``), one image size.
        class_models: name -> model to use on the class-disjoint split instead (a model
            trained on the class split's training classes), or None to leave that method out of
            the class split; names missing here use ``models``.
        trained_classes: embedder fingerprint -> the classes it trained on (see
            :class:`simlib.train.TrainingRecord`); None for a label-free model. An untrained
            embedder saw no class. A trained one missing here cannot be scored on the class split.
        seed: split and augmentation seed (the same one training used).
        splits: "image" and/or "class".
        near_duplicates: add the near-duplicate rows (image-disjoint test images).
        progress: print a line per split.

    Returns:
        One dict per (split, part, method) with the :data:`COLUMNS`. ``part`` is "all", or
        "seen" / "unseen" when a trained model's classes divide the test classes; each part's
        images query each other (Recall@K of parts of different sizes are not comparable).

    Raises:
        SimlibError: a model would be scored on a class-disjoint split whose classes it trained on
            (or whose training classes are unknown).
    """
    from simlib.data import load_images

    if not table.has_labels:
        raise SimlibError(f"{table.name} has no labels: the comparison needs class sub-folders or a label column")
    sizes = {m.image_size for m in [*models.values(), *(class_models or {}).values()] if m is not None}
    if len(sizes) > 1:
        raise SimlibError(f"the models to compare use different image sizes {sorted(sizes)}: compare like with like")
    size = sizes.pop() if sizes else 64
    known = dict(trained_classes or {})
    rows: list[dict[str, Any]] = []

    def classes_of(model) -> frozenset[str] | None:
        """The classes a model trained on: empty when untrained or label-free, None when unknown."""
        if not model.config.trained:
            return frozenset()
        if model.fingerprint not in known:
            return None
        return frozenset(str(c) for c in known[model.fingerprint] or ())

    def add(split: str, part: str, method: str, scores: dict) -> None:
        rows.append({"split": split, "part": part, "method": method, **{c: scores[c] for c in COLUMNS[3:]}})

    for split in splits:
        test = split_table(table, seed=seed, by=split)["test"]
        chosen = {n: (class_models or {}).get(n, m) if split == "class" else m for n, m in models.items()}
        chosen = {n: m for n, m in chosen.items() if m is not None}
        test_classes = {str(c) for c in np.unique(test.labels.astype(str))}
        if split == "class":
            for name, model in chosen.items():
                seen = classes_of(model)
                if seen is None:
                    raise SimlibError(
                        f"cannot score {name!r} on the class-disjoint split: its training classes are unknown "
                        "(train it with this simlib, --split-by class)"
                    )
                if seen & test_classes:
                    raise SimlibError(
                        f"{name!r} trained on {len(seen & test_classes)} of the {len(test_classes)} class-disjoint "
                        f"test classes (e.g. {sorted(seen & test_classes)[0]!r}): give a model trained with "
                        f"--split-by class and seed {seed} for the class split"
                    )
        # the test images split by what the trained model(s) on this split saw
        seen_sets = [c for c in (classes_of(m) for m in chosen.values()) if c]
        if any(c is None for c in (classes_of(m) for m in chosen.values())):
            seen_sets = []  # an unknown training set: report the whole split only
        labels = test.labels.astype(str)
        parts: dict[str, np.ndarray] = {"all": np.arange(len(test))}
        if split != "class" and seen_sets:
            seen = frozenset.union(*seen_sets)
            mask = np.isin(labels, sorted(seen))
            if mask.any() and (~mask).any():
                parts.update(seen=np.flatnonzero(mask), unseen=np.flatnonzero(~mask))
        elif split == "class":
            parts = {"unseen": parts["all"]}
        if progress:
            print(f"evaluating {len(test)} {split}-disjoint test images ({', '.join(parts)})", flush=True)
        images = load_images(test, size)
        for part, rows_of_part in parts.items():
            imgs, labs = images[rows_of_part], test.labels[rows_of_part]
            add(split, part, "pixels", class_retrieval(pixel_embeddings, imgs, labs))
            for name, model in chosen.items():
                add(split, part, name, class_retrieval(model_embedder(model), imgs, labs))
        if near_duplicates and split == "image":
            queries = near_duplicate_queries(images, seed)
            add("near-duplicate", "all", "pixels", near_duplicate_retrieval(pixel_embeddings, images, queries))
            for name, model in models.items():
                add("near-duplicate", "all", name, near_duplicate_retrieval(model_embedder(model), images, queries))
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned plain-text table ("classes": all, or seen / unseen by the trained model).

    Recall@K depends on how many images each query searches: compare rows of one split and part only.
    """
    lines = [
        f"{'split':<15} {'classes':<7} {'method':<22} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'mAP@R':>6} {'queries':>7}"
    ]
    for r in rows:
        lines.append(
            f"{r['split']:<15} {r.get('part', 'all'):<7} {r['method']:<22} {r['recall@1']:6.3f} {r['recall@5']:6.3f} "
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
