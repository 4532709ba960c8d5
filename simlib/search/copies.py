"""When are two gallery images copies of each other, for one model: a cut calibrated on the model's own
scores (:class:`CopyCut`), and when no cosine separates copies from distinct neighbours, the two images'
32 x 32 thumbnails must also correlate more than any distinct pair of the gallery does (:func:`thumbnail`)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simlib.errors import SimlibError

COPY_PERCENTILE = 99.9  # the copy cut sits above this percentile of nearest-distinct cosines


COPY_MIN_RECALL = 0.9  # a cosine cut that keeps fewer copies than this cannot separate: thumbnails decide too


# Cosine cuts tried with the thumbnail check, as percentiles of the near-copies' cosines.
COPY_COSINE_PERCENTILES = (1, 2, 5, 10, 20, 30, 50)


THUMB_SIZE = 32  # the pixel check compares 32 x 32 RGB thumbnails (the product photos are 60 x 80)


# Thumbnails this correlated are the same picture (the product set holds one photo under two products, ids
# 45656 Trunk and 45657 Briefs: mean pixel difference 1.2 of 255, thumbnail correlation 0.9999).
SAME_PICTURE = 0.9995


# "Just above" a measured cosine or thumbnail correlation: past float32 round-off, so that a pair the calibration
# kept out stays out when a search or another process recomputes its figures in another order.
COSINE_MARGIN = 1e-6


THUMB_MARGIN = 1e-4


def rounded(x: float | None, digits: int = 6) -> float | None:
    """``x`` rounded for a JSON manifest (None stays None)."""
    return None if x is None else round(float(x), digits)


def from_mapping(cls, data: Mapping[str, Any]):
    """A dataclass from a stored mapping, keys it does not know ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def thumbnail(image: Any, size: int = THUMB_SIZE) -> np.ndarray:
    """The image as a ``size`` x ``size`` RGB thumbnail (box filter), mean-centred and scaled to unit length:
    the dot product of two is the Pearson correlation of their pixels, 1 for the same picture.

    The one pixel fingerprint of simlib: the app's copy merging (:class:`CopyCut`) and the gallery's duplicate
    review (:mod:`simlib.photos.duplicates`) both compare these. A large photo is decoded at a reduced size
    (at least twice ``size``, as :func:`simlib.data.prepare_image` does), so a camera photo costs a few ms."""
    from simlib.data import open_image
    from simlib.data.decode import REDUCE_MARGIN

    img = open_image(image, reduce_to=REDUCE_MARGIN * size)
    a = np.asarray(img.resize((size, size), Image.Resampling.BOX), np.float32).ravel()
    a = a - a.mean()
    return a / max(float(np.linalg.norm(a)), 1e-6)


THUMB_DIM = 3 * THUMB_SIZE * THUMB_SIZE  # values in one thumbnail


def thumbnails(sources: Sequence[Any], workers: int | None = None) -> np.ndarray:
    """:func:`thumbnail` of each source (a path, an image...), in ``workers`` threads (default: every core), as
    rows of a float32 array; zeros (correlation 0 with anything) for a missing path or an unreadable image."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    def one(source: Any) -> np.ndarray:
        try:
            return thumbnail(source) if source is not None else np.zeros(THUMB_DIM, np.float32)
        except (SimlibError, TypeError):
            return np.zeros(THUMB_DIM, np.float32)

    if not len(sources):
        return np.zeros((0, THUMB_DIM), np.float32)
    with ThreadPoolExecutor(workers or max(1, os.cpu_count() or 1)) as pool:
        return np.stack(list(pool.map(one, sources)))


def copy_correlations(copies: Sequence[Any], original_thumbs: np.ndarray) -> np.ndarray:
    """The thumbnail correlation of each near-copy with its original (``original_thumbs``, aligned rows): what a
    calibration of the pixel check measures on copies it made."""
    return np.sum(thumbnails(copies) * np.asarray(original_thumbs, np.float32), axis=1)


def near_copy(image: Any, seed: int, crop: float = 0.01) -> Image.Image:
    """What a gallery holds twice: the image re-saved as JPEG (quality 70-95), resized (0.75-1.5x) and cropped
    by up to ``crop`` (1 %) on each side. (Not mirrored: a mirrored photo is another view, not a copy.)"""
    from simlib.data import open_image

    rng = np.random.default_rng(seed)
    img = open_image(image)
    w, h = img.size
    left, top, right, bottom = (rng.uniform(0, crop, 4) * [w, h, w, h]).round().astype(int)
    img = img.crop((left, top, max(left + 1, w - right), max(top + 1, h - bottom)))
    f = rng.uniform(0.75, 1.5)
    img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(70, 96)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@dataclasses.dataclass(frozen=True)
class CopyCut:
    """When two gallery images are copies of each other, for one model.

    Attributes:
        score: two images are copies only when their embeddings' cosine is at least this.
        thumb_min: when not None, their :func:`thumbnail` correlation must also be at least this (the cosine
            alone could not keep distinct neighbours out while keeping most copies).
        distinct_percentile: the percentile of nearest-distinct cosines the cosine-only cut sits above.
        distinct_cut: that percentile's value.
        cosine_recall: share of calibration near-copies over ``distinct_cut`` (the cosine alone).
        copy_recall: share of calibration near-copies the verdict (cosine, and thumbnail when used) calls copies.
        distinct_leak: share of gallery images with a distinct partner the verdict calls a copy.
        separable: whether the cosine alone separates (``cosine_recall`` >= :data:`COPY_MIN_RECALL`).
        same_picture: distinct pairs (different labels, or different files when unlabelled) whose thumbnails
            correlate at :data:`SAME_PICTURE` or more: the same picture twice, left out of the calibration.
        n_images: gallery images measured; n_copies: near-copies made (:func:`near_copy`).
        distinct_by: "label" (distinct = another label) or "file" (another file: an unlabelled gallery).
        seed: which images were copied and how.
    """

    score: float
    thumb_min: float | None
    distinct_percentile: float
    distinct_cut: float
    cosine_recall: float
    copy_recall: float
    distinct_leak: float
    separable: bool
    same_picture: int
    n_images: int
    n_copies: int
    distinct_by: str = "label"
    seed: int = 0

    @property
    def needs_thumbnails(self) -> bool:
        """Whether the verdict needs the two images' thumbnails (not only their cosine)."""
        return self.thumb_min is not None

    def same(self, cosine: float, thumb_similarity: float | None = None) -> bool:
        """Whether two images of this cosine (and this thumbnail correlation, when :attr:`needs_thumbnails`)
        are copies. Without the correlation when it is needed: False (never merge on a cosine that cannot
        tell)."""
        if not float(cosine) >= self.score:
            return False
        if self.thumb_min is None:
            return True
        return thumb_similarity is not None and float(thumb_similarity) >= self.thumb_min

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = dataclasses.asdict(self)
        return {k: rounded(v, 7) if isinstance(v, float) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CopyCut:
        """Read :meth:`to_dict`'s output."""
        return from_mapping(cls, data)


def _groups(paths: Sequence[str | None] | None, labels: Sequence[Any] | None, n: int) -> np.ndarray:
    """An id per row such that rows sharing it are never "distinct": the same label (labelled), else the
    same file; rows without either get their own."""
    keys = labels if labels is not None else paths
    codes: dict[Any, int] = {}
    if keys is None:
        return np.arange(n)
    return np.asarray([codes.setdefault(k, len(codes)) if k not in (None, "") else -1 - i for i, k in enumerate(keys)])


def nearest_distinct(
    vectors: np.ndarray,
    paths: Sequence[str | None] | None = None,
    labels: Sequence[Any] | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """Each row's highest cosine with a *distinct* row: another label when ``labels`` are given (certainly
    another product), else another file. Exact, in chunks (memory: ``chunk`` x n floats); -inf when none."""
    v = np.asarray(vectors, np.float32)
    n = len(v)
    group = _groups(paths, labels, n)
    out = np.full(n, -np.inf, np.float64)
    for a in range(0, n, chunk):
        rows = np.arange(a, min(n, a + chunk))
        sims = v[rows] @ v.T
        sims[rows - a, rows] = -np.inf
        sims[group[rows][:, None] == group[None, :]] = -np.inf
        out[rows] = sims.max(axis=1)
    return out


def distinct_pairs_above(
    vectors: np.ndarray, score: float, paths=None, labels=None, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct pair (i < j, as :func:`nearest_distinct` defines distinct) whose cosine is at least
    ``score``, exhaustively: two index arrays."""
    v = np.asarray(vectors, np.float32)
    n = len(v)
    group = _groups(paths, labels, n)
    out_i, out_j = [], []
    for a in range(0, n, chunk):
        rows = np.arange(a, min(n, a + chunk))
        sims = v[rows] @ v.T
        i, j = np.nonzero(sims >= score)
        i = i + a
        keep = (i < j) & (group[i] != group[j])
        out_i.append(i[keep])
        out_j.append(j[keep])
    return np.concatenate(out_i), np.concatenate(out_j)


def copy_cut(
    copy_scores: Sequence[float] | np.ndarray,
    distinct_scores: Sequence[float] | np.ndarray,
    *,
    copy_thumbs: Sequence[float] | np.ndarray | None = None,
    pair_scores: Sequence[float] | np.ndarray | None = None,
    pair_thumbs: Sequence[float] | np.ndarray | None = None,
    pair_rows: Sequence[int] | np.ndarray | None = None,
    percentile: float = COPY_PERCENTILE,
    min_recall: float = COPY_MIN_RECALL,
    distinct_by: str = "label",
    seed: int = 0,
) -> CopyCut:
    """Choose the copy cut from the model's own scores.

    1. The cosine alone: just above (:data:`COSINE_MARGIN`) the ``percentile``-th percentile of
       ``distinct_scores`` (each gallery image's cosine with its nearest distinct image). When at least
       ``min_recall`` of ``copy_scores`` (near-copies against their originals) clear it, that is the verdict.
    2. Otherwise the cosine cannot separate, and a thumbnail check is added. For each cosine cut at a
       percentile of ``copy_scores`` in :data:`COPY_COSINE_PERCENTILES` (1st: keeps 99 % of copies on the
       cosine), ``thumb_min`` is just above (:data:`THUMB_MARGIN`) the highest thumbnail correlation of any
       distinct pair over that cosine (``pair_scores``/``pair_thumbs``: every distinct pair over the lowest of
       those cosines, as from :func:`distinct_pairs_above`), pairs that are the same picture
       (:data:`SAME_PICTURE`) aside, so that no distinct pair of the gallery passes both; the pair of cuts
       that keeps the most copies wins.

    Args:
        copy_thumbs: thumbnail correlation of each near-copy with its original (step 2).
        pair_rows: for each pair, one of its two rows (to count the images it leaks; default: the pair's index).

    Raises:
        SimlibError: no scores, or no thumbnail figures when the cosine cannot separate.
    """
    cs = np.asarray(copy_scores, np.float64)
    ds = np.asarray(distinct_scores, np.float64)
    ds = ds[np.isfinite(ds)]
    if not len(cs) or not len(ds):
        raise SimlibError("the copy cut needs near-copy scores and nearest-distinct scores")
    distinct_cut = float(np.percentile(ds, percentile, method="higher"))
    above = distinct_cut + COSINE_MARGIN
    cosine_recall = float(np.mean(cs >= above))
    common: dict[str, Any] = dict(distinct_percentile=float(percentile), distinct_cut=distinct_cut)
    common.update(cosine_recall=cosine_recall, n_images=len(ds), n_copies=len(cs), distinct_by=distinct_by)
    common.update(seed=int(seed))
    if cosine_recall >= min_recall:
        leak = float(np.mean(ds >= above))
        return CopyCut(above, None, copy_recall=cosine_recall, distinct_leak=leak, separable=True, same_picture=0,
                       **common)  # fmt: skip
    if copy_thumbs is None or pair_scores is None or pair_thumbs is None:
        raise SimlibError("the cosine cannot tell copies from distinct images: thumbnail correlations are needed")
    ct = np.asarray(copy_thumbs, np.float64)
    ps = np.asarray(pair_scores, np.float64)
    pt = np.asarray(pair_thumbs, np.float64)
    rows = np.arange(len(ps)) if pair_rows is None else np.asarray(pair_rows)
    if ct.shape != cs.shape or pt.shape != ps.shape or rows.shape != ps.shape:
        raise SimlibError("thumbnail correlations must be aligned with the scores")
    best: tuple[float, float, float] | None = None  # (recall, cosine cut, thumbnail cut)
    same_picture = 0
    for q in COPY_COSINE_PERCENTILES:
        score = min(above, float(np.percentile(cs, q, method="lower")))
        over = ps >= score
        if q == COPY_COSINE_PERCENTILES[0]:
            same_picture = int(np.sum(over & (pt >= SAME_PICTURE)))
        rivals = pt[over & (pt < SAME_PICTURE)]
        thumb_min = float(rivals.max()) + THUMB_MARGIN if len(rivals) else -1.0
        recall = float(np.mean((cs >= score) & (ct >= thumb_min)))
        if best is None or recall > best[0]:
            best = (recall, score, thumb_min)
    assert best is not None
    recall, score, thumb_min = best
    passed = (ps >= score) & (pt >= thumb_min)
    leak = len(np.unique(rows[passed])) / len(ds)
    return CopyCut(score, thumb_min, copy_recall=recall, distinct_leak=leak, separable=False,
                   same_picture=same_picture, **common)  # fmt: skip


def copy_groups(
    order: Sequence[int], vectors: np.ndarray, cut: CopyCut, thumbs: np.ndarray | None = None
) -> list[list[int]]:
    """Group ranked items into copies the way a collapsed result list does: each item, best first, joins the
    first kept item it is a copy of (:meth:`CopyCut.same`), else is kept. ``vectors`` and ``thumbs``
    (:func:`thumbnail` rows) are indexed by item. Returns the groups as lists of positions into ``order``
    (the kept item first)."""
    v = np.asarray(vectors, np.float32)
    groups: list[list[int]] = []
    for pos, item in enumerate(order):
        for g in groups:
            head = order[g[0]]
            t = None if thumbs is None else float(thumbs[head] @ thumbs[item])
            if cut.same(float(v[head] @ v[item]), t):
                g.append(pos)
                break
        else:
            groups.append([pos])
    return groups


def calibrate_copies(
    searcher,
    *,
    n_copies: int = 200,
    percentile: float = COPY_PERCENTILE,
    min_recall: float = COPY_MIN_RECALL,
    use_labels: bool = True,
    max_images: int = 20_000,
    seed: int = 0,
) -> CopyCut:
    """:func:`copy_cut` for ``searcher``'s gallery: ``n_copies`` gallery images (drawn with ``seed``) against
    :func:`near_copy` versions of themselves, and every gallery image against the distinct ones (another
    label when every image has one and ``use_labels``, else another file). A gallery larger than
    ``max_images`` is calibrated on a seeded sample of that many images (the pair search is quadratic): the
    guarantee that no distinct pair passes then holds within the sample."""
    index = searcher.index
    records = list(index.records())
    if len(records) > max_images:
        keep = np.random.default_rng([seed, 1]).choice(len(records), size=max_images, replace=False)
        records = [records[int(i)] for i in np.sort(keep)]
    if len(records) < 2:
        raise SimlibError("the copy cut needs a gallery of at least 2 images")
    vectors = index.vectors_of([r.id for r in records])
    paths = [r.path for r in records]
    labelled = use_labels and all(r.label for r in records)
    labels = [r.label for r in records] if labelled else None
    distinct = nearest_distinct(vectors, paths, labels)
    rng = np.random.default_rng(seed)
    with_file = [i for i, p in enumerate(paths) if p and Path(p).is_file()]
    if not with_file:
        raise SimlibError("the copy cut needs gallery images with files")
    chosen = [int(i) for i in rng.choice(with_file, size=min(n_copies, len(with_file)), replace=False)]
    copies = [near_copy(paths[i], seed * 100_003 + i) for i in chosen]
    copy_scores = np.sum(searcher.embedder.embed_images(copies) * vectors[chosen], axis=1)
    by = "label" if labelled else "file"
    distinct_cut = float(np.percentile(distinct[np.isfinite(distinct)], percentile, method="higher"))
    if np.mean(copy_scores >= distinct_cut + COSINE_MARGIN) >= min_recall:
        return copy_cut(copy_scores, distinct, percentile=percentile, min_recall=min_recall, distinct_by=by, seed=seed)
    # the cosine cannot separate: thumbnails of the copies and of every distinct pair over the lowered cosine
    low = float(np.percentile(copy_scores, 1, method="lower"))
    i, j = distinct_pairs_above(vectors, low, paths, labels)
    rows = np.unique(np.concatenate([np.asarray(chosen, np.int64), i, j]))
    at = {int(r): n for n, r in enumerate(rows)}
    thumbs = thumbnails([paths[int(r)] or None for r in rows])
    copy_thumbs = copy_correlations(copies, thumbs[[at[r] for r in chosen]])
    pair_thumbs = [float(thumbs[at[int(a)]] @ thumbs[at[int(b)]]) for a, b in zip(i, j, strict=True)]
    pair_scores = np.sum(vectors[i] * vectors[j], axis=1) if len(i) else np.zeros(0)
    return copy_cut(
        copy_scores,
        distinct,
        copy_thumbs=copy_thumbs,
        pair_scores=pair_scores,
        pair_thumbs=pair_thumbs,
        pair_rows=i,
        percentile=percentile,
        min_recall=min_recall,
        distinct_by=by,
        seed=seed,
    )


class Thumbnails:
    """Gallery thumbnails by path, computed when first needed (at most ``size`` kept: ~12 KB each)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, path: str) -> np.ndarray:
        if path not in self._cache:
            if len(self._cache) >= self.size:
                self._cache.clear()
            self._cache[path] = thumbnail(path)
        return self._cache[path]


def copies_among(
    sims: np.ndarray,
    path: str | None,
    kept_paths: Sequence[str | None],
    cut: float | CopyCut,
    thumbs: Thumbnails,
    label: str | None = None,
    kept_labels: Sequence[str | None] = (),
) -> np.ndarray:
    """Which kept results a candidate (cosines ``sims`` to them, file ``path``) is a copy of: a cosine over a
    fixed cut, or this model's :class:`CopyCut` (with its thumbnail check where the cosine cannot tell).

    With the calibrated cut, two results the gallery labels differently are never copies: the gallery says
    they are different things (the product set shows one photo under two products, a Trunk and a Briefs).
    """
    if not isinstance(cut, CopyCut):
        return sims >= float(cut)
    out = np.zeros(len(sims), bool)
    for n in np.flatnonzero(sims >= cut.score):
        if label is not None and n < len(kept_labels) and kept_labels[n] is not None and kept_labels[n] != label:
            continue
        similarity = None
        if cut.needs_thumbnails and path and kept_paths[n]:
            similarity = float(thumbs(path) @ thumbs(kept_paths[n]))
        out[n] = cut.same(float(sims[n]), similarity)
    return out


def merge_copies(
    candidates: Sequence[tuple[int, float]],
    vectors: np.ndarray,
    records: Sequence[Any],
    k: int,
    cut: float | CopyCut,
    thumbs: Thumbnails,
) -> list[list]:
    """Walk ranked ``(id, score)`` candidates and keep the first ``k`` distinct ones: a candidate that is a
    copy of a kept one (:func:`copies_among`), or another entry of the same file, adds to that one's count.

    Args:
        candidates: ``(id, score)`` best first; ``vectors`` and ``records`` (with ``path`` and ``label``) in
            the same order.
        k: distinct results wanted.
        cut: a fixed cosine or this model's :class:`CopyCut`.
        thumbs: the thumbnails the cut's pixel check reads.

    Returns:
        ``[id, score, copies merged into it]`` for each kept result, best first.
    """
    kept: list[list] = []
    kept_vectors = np.zeros((0, np.shape(vectors)[-1]), np.float32)
    kept_paths: list[str | None] = []
    kept_labels: list[str | None] = []
    for (i, s), v, record in zip(candidates, vectors, records, strict=True):
        path = record.path
        sims = kept_vectors @ v
        same_file = np.array([p is not None and p == path for p in kept_paths], bool)
        copies = copies_among(sims, path, kept_paths, cut, thumbs, record.label, kept_labels)
        same = np.flatnonzero(copies | same_file)
        if len(same):
            kept[int(same[0])][2] += 1
            continue
        kept.append([i, s, 0])
        kept_vectors = np.vstack([kept_vectors, v[None, :]])
        kept_paths.append(path)
        kept_labels.append(record.label)
        if len(kept) == k:
            break
    return kept
