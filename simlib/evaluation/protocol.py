"""The evaluation protocol: before/after tables on held-out images and held-out classes.

The methods are compared on the same test images:

- ``pixels``: 16×16 thumbnails, flattened and L2-normalised (the baseline anything must beat);
- the backbone as it comes (:func:`simlib.evaluation.baselines.backbone_baseline`: "untrained
  backbone" with random weights, "ImageNet backbone" with ImageNet's);
- the head before training (:func:`simlib.evaluation.baselines.head_before_training`): the trained
  model's architecture and fitted statistics, no gradient step;
- ``trained``: a model from :func:`simlib.train.fit`.

Every pair of methods is compared on the same queries (:mod:`simlib.evaluation.stats`): the paired
difference of Recall@1 and of mAP@R with a seeded bootstrap 95 % interval, a p-value and the verdict
word the interval allows.

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
import dataclasses
import os
import platform
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from simlib.data import ImageTable, split_table
from simlib.errors import SimlibError
from simlib.evaluation.stats import (
    BEATS,
    CONFIDENCE,
    N_BOOTSTRAP,
    PER_QUERY,
    WORSE,
    PairedDifference,
    paired_difference,
)

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
    """``images -> embeddings`` for an :class:`~simlib.model.Embedder`, in batches; with the feature cache
    on (:func:`simlib.model.features.use_feature_cache`), each image goes through the backbone once."""
    from simlib.model.features import embed_images_cached

    return lambda images: embed_images_cached(embedder, images) if len(images) else np.zeros((0, 0), np.float32)


def class_retrieval(
    embed: Callable[[np.ndarray], np.ndarray], images: np.ndarray, labels: np.ndarray, per_query: bool = False
):
    """Recall@1/5/10 and mAP@R, each image querying all the others (same class = relevant).

    With ``per_query``: ``(summary, per_query_scores)`` (see :func:`simlib.evaluation.metrics.retrieval_scores`).
    """
    from simlib.evaluation.metrics import retrieval_scores

    e = embed(images)
    summary, scores = retrieval_scores(e, labels, e, labels, ref_includes_query=True)
    return (summary, scores) if per_query else summary


def near_duplicate_queries(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The seeded augmented copies used as near-duplicate queries (one per image)."""
    from simlib.train.samplers import Augmenter

    aug = Augmenter(images.shape[1], seed=seed + NEAR_DUP_SEED_OFFSET)
    return np.concatenate([aug(images[i : i + 256]) for i in range(0, len(images), 256)])


def near_duplicate_retrieval(
    embed: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    queries: np.ndarray | None = None,
    seed: int = 0,
    per_query: bool = False,
):
    """Recall@K of finding each image's original from an augmented copy of it.

    Args:
        embed: ``images -> embeddings``.
        images: uint8 (N, S, S, 3) originals: the gallery.
        queries: their augmented copies (default: :func:`near_duplicate_queries`).
        seed: augmentation seed when ``queries`` is None.
        per_query: also return the per-query scores.
    """
    from simlib.evaluation.metrics import retrieval_scores

    queries = near_duplicate_queries(images, seed) if queries is None else queries
    ids = np.arange(len(images))
    summary, scores = retrieval_scores(embed(queries), ids, embed(images), ids, ref_includes_query=False)
    return (summary, scores) if per_query else summary


@dataclasses.dataclass
class Comparison:
    """What :func:`compare` measured.

    Attributes:
        rows: one dict per (split, part, method) with the :data:`COLUMNS`.
        differences: every pair of methods on the same queries (each split and part), for Recall@1
            and mAP@R: the paired difference, its bootstrap interval, a p-value and the verdict
            (:class:`~simlib.evaluation.stats.PairedDifference`).
        meta: how it was measured (seed, confidence, resamples).
    """

    rows: list[dict[str, Any]]
    differences: list[PairedDifference]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def row(self, split: str, part: str, method: str) -> dict[str, Any]:
        """The row of one method on one split and part."""
        for r in self.rows:
            if (r["split"], r["part"], r["method"]) == (split, part, method):
                return r
        raise KeyError((split, part, method))

    def difference(self, split: str, part: str, a: str, b: str, metric: str = "recall@1") -> PairedDifference:
        """``a`` against ``b`` on one split and part (swapped pairs are turned round)."""
        for d in self.differences:
            if (d.split, d.part, d.metric) == (split, part, metric) and {d.a, d.b} == {a, b}:
                return d if d.a == a else flip(d)
        raise KeyError((split, part, a, b, metric))

    def table(self) -> str:
        return format_table(self.rows)

    def differences_table(self) -> str:
        return format_differences(self.differences)

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "differences": [d.to_dict() for d in self.differences], **self.meta}


def flip(d: PairedDifference) -> PairedDifference:
    """``b`` against ``a``: the same comparison, the other way round."""
    word = {BEATS: WORSE, WORSE: BEATS}.get(d.verdict, d.verdict)
    return dataclasses.replace(
        d, a=d.b, b=d.a, a_score=d.b_score, b_score=d.a_score, difference=-d.difference, low=-d.high,
        high=-d.low, verdict=word,
    )  # fmt: skip


def _classes_of(model, known: Mapping[str, Collection[str] | None]) -> frozenset[str] | None:
    """The classes a model trained (or fitted statistics) on: empty when untrained or label-free, None
    when unknown. ``known`` (fingerprint -> classes) is asked first: a head before training fitted its
    statistics on the trained model's classes."""
    if model.fingerprint in known:
        return frozenset(str(c) for c in known[model.fingerprint] or ())
    return frozenset() if not model.config.trained else None


def _check_class_split(chosen: Mapping[str, Any], known, test_classes: set[str], seed: int) -> None:
    for name, model in chosen.items():
        seen = _classes_of(model, known)
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


def _parts(split: str, labels: np.ndarray, chosen: Mapping[str, Any], known) -> dict[str, np.ndarray]:
    """The test rows of each part: "all", or the classes a trained model saw apart from the others."""
    every = np.arange(len(labels))
    if split == "class":
        return {"unseen": every}
    classes = [_classes_of(m, known) for m in chosen.values()]
    seen_sets = [] if any(c is None for c in classes) else [c for c in classes if c]
    parts: dict[str, np.ndarray] = {"all": every}
    if seen_sets:
        mask = np.isin(labels, sorted(frozenset.union(*seen_sets)))
        if mask.any() and (~mask).any():
            parts.update(seen=np.flatnonzero(mask), unseen=np.flatnonzero(~mask))
    return parts


def _paired(split: str, part: str, scores: Mapping[str, dict], seed: int) -> list[PairedDifference]:
    """Every later method against every earlier one (pixels first), for each paired metric."""
    out = []
    names = list(scores)
    for i, a in enumerate(names):
        for b in names[:i]:
            for metric, key in PER_QUERY.items():
                out.append(
                    paired_difference(
                        scores[a][key], scores[b][key], metric=metric, a=a, b=b, split=split, part=part, seed=seed
                    )
                )
    return out


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
) -> Comparison:
    """The before/after table, with every method-vs-method difference on the same queries: pixels
    and each model on each split's test images, with the test classes a trained model saw in
    training ("seen") scored apart from those it did not ("unseen").

    Args:
        table: a labelled dataset.
        models: name -> :class:`~simlib.model.Embedder` (``{"untrained backbone": e0, "trained": e1}``),
            one image size; the order of the names is the order of the rows and of the pairs. None:
            a method scored on the class split only (through ``class_models``).
        class_models: name -> model to use on the class-disjoint split instead (a model
            trained on the class split's training classes), or None to leave that method out of
            the class split; names missing here use ``models``.
        trained_classes: embedder fingerprint -> the classes it trained on (see
            :class:`simlib.train.TrainingRecord`), or on which a head before training fitted its
            statistics; None for a label-free model. An untrained embedder not listed saw no class.
            A trained one missing here cannot be scored on the class split.
        seed: split, augmentation and bootstrap seed (the same one training used).
        splits: "image" and/or "class".
        near_duplicates: add the near-duplicate rows (image-disjoint test images).
        progress: print a line per split and part, with the time it took.

    Returns:
        A :class:`Comparison`: ``rows`` (one per split, part and method; ``part`` is "all", or
        "seen" / "unseen" when a trained model's classes divide the test classes; each part's images
        query each other, so Recall@K of parts of different sizes are not comparable) and
        ``differences`` (each pair of methods on each split and part, Recall@1 and mAP@R).

    Raises:
        SimlibError: a model would be scored on a class-disjoint split whose classes it trained on
            (or whose training classes are unknown).
    """
    from simlib.model.features import cache_while

    if not table.has_labels:
        raise SimlibError(f"{table.name} has no labels: the comparison needs class sub-folders or a label column")
    with cache_while():  # each test image goes through each backbone once, whatever the parts and splits
        return _compare(table, models, class_models, trained_classes, seed, splits, near_duplicates, progress)


def _compare(table, models, class_models, trained_classes, seed, splits, near_duplicates, progress) -> Comparison:
    """:func:`compare`'s work (the arguments are its own)."""
    from simlib.data import load_images

    sizes = {m.image_size for m in [*models.values(), *(class_models or {}).values()] if m is not None}
    if len(sizes) > 1:
        raise SimlibError(f"the models to compare use different image sizes {sorted(sizes)}: compare like with like")
    size = sizes.pop() if sizes else 64
    known = dict(trained_classes or {})
    result = Comparison([], [], {"seed": seed, "confidence": CONFIDENCE, "bootstrap_resamples": N_BOOTSTRAP})
    say = (lambda text: print(text, flush=True)) if progress else (lambda text: None)
    for split in splits:
        test = split_table(table, seed=seed, by=split)["test"]
        chosen = {n: (class_models or {}).get(n, m) if split == "class" else m for n, m in models.items()}
        chosen = {n: m for n, m in chosen.items() if m is not None}
        if split == "class":
            _check_class_split(chosen, known, {str(c) for c in np.unique(test.labels.astype(str))}, seed)
        parts = _parts(split, test.labels.astype(str), chosen, known)
        say(f"evaluating {len(test)} {split}-disjoint test images ({', '.join(parts)}), {len(chosen) + 1} methods")
        images = load_images(test, size)
        pixels_first = {"pixels": pixel_embeddings}
        for part, rows_ in parts.items():
            t0 = time.perf_counter()
            embeds = {**pixels_first, **{n: model_embedder(m) for n, m in chosen.items()}}
            score = partial(class_retrieval, images=images[rows_], labels=test.labels[rows_], per_query=True)
            _score_methods(result, split, part, embeds, score, seed)
            say(f"  {split}/{part}: {len(rows_)} queries scored in {time.perf_counter() - t0:.0f} s")
        if near_duplicates and split == "image":
            t0 = time.perf_counter()
            queries = near_duplicate_queries(images, seed)
            embeds = {**pixels_first, **{n: model_embedder(m) for n, m in models.items() if m is not None}}
            score = partial(near_duplicate_retrieval, images=images, queries=queries, per_query=True)
            _score_methods(result, "near-duplicate", "all", embeds, score, seed)
            say(f"  near-duplicate: {len(images)} queries scored in {time.perf_counter() - t0:.0f} s")
    return result


def _score_methods(result: Comparison, split: str, part: str, embeds: Mapping[str, Callable], score, seed: int) -> None:
    """Score each method on one part (``score(embed) -> (summary, per_query)``), then pair them up."""
    per_query = {}
    for name, embed in embeds.items():
        summary, per_query[name] = score(embed)
        result.rows.append(_row(split, part, name, summary))
    result.differences.extend(_paired(split, part, per_query, seed))


def _row(split: str, part: str, method: str, scores: Mapping[str, Any]) -> dict[str, Any]:
    return {"split": split, "part": part, "method": method, **{c: scores[c] for c in COLUMNS[3:]}}


def format_differences(differences: Sequence[PairedDifference]) -> str:
    """The paired differences as an aligned table: Recall@1 and mAP@R side by side, in points, with
    the 95 % interval, the p-value and the verdict chosen from the interval."""
    by_pair: dict[tuple, dict[str, PairedDifference]] = {}
    for d in differences:
        by_pair.setdefault((d.split, d.part, d.a, d.b), {})[d.metric] = d
    head = f"{'split':<15} {'classes':<7} {'a - b':<46} {'queries':>7}"
    lines = [head + "  " + "  ".join(f"{m:<51}" for m in ("R@1: difference [95% CI], p, verdict", "mAP@R: the same"))]
    for (split, part, a, b), metrics in by_pair.items():
        cells = []
        for metric in PER_QUERY:
            d = metrics.get(metric)
            cells.append("" if d is None else f"{d.interval_text(unit=''):<22} p={_p(d.p_value):<6} {d.verdict:<22}")
        n = next(iter(metrics.values())).n_queries
        lines.append(f"{split:<15} {part:<7} {(a + ' - ' + b)[:46]:<46} {n:>7}  " + "  ".join(cells))
    lines.append("(differences in points of 100; verdict from the interval: 'beats' / 'worse' when it excludes 0)")
    return "\n".join(lines)


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


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
    result: Comparison | Sequence[dict[str, Any]], out_dir: str | os.PathLike, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``results.json`` (rows, paired differences, meta, machine) and ``results.csv`` (rows) into ``out_dir``."""
    from simlib.storage import save_json

    rows = result.rows if isinstance(result, Comparison) else list(result)
    differences = [d.to_dict() for d in result.differences] if isinstance(result, Comparison) else []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {**(result.meta if isinstance(result, Comparison) else {}), **(meta or {})}
    save_json(out / RESULTS_JSON, {"rows": rows, "differences": differences, "meta": info, "machine": machine()})
    with open(out / RESULTS_CSV, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({c: r[c] for c in COLUMNS})
    return out
