"""Near-duplicates across a whole gallery: groups, a suggested keep, a contact sheet, moving copies aside.

Two images are near-duplicates when they clear two calibrated thresholds: the cosine of their
embeddings (the index's own vectors) and the correlation of their pixel fingerprints (a 32x32 colour
thumbnail, :func:`simlib.search.copies.thumbnail`: the one fingerprint the app's copy merging compares
too). :func:`find_duplicates` finds candidate pairs with the index's k-nearest-neighbour search batch
by batch (``k`` grows, up to ``max_k``, only for images whose k-th neighbour still clears the
threshold), checks each candidate's fingerprints, and links what passes: memory grows with the
gallery, never with its square. Linked images form groups (connected components); each group
suggests one image to keep: the largest resolution, then the oldest file, then the lowest id.
:func:`review_duplicates` does all of it for ``simlib duplicates`` and the app's panel.

The thresholds depend on the model: an untrained backbone puts different products on a white
background at cosines above 0.99, where a trained one keeps only copies. :func:`calibrate_duplicates`
measures them on the gallery itself: seeded near-copies of sampled gallery images (resized to 40-70 %,
re-encoded at JPEG quality 30-50, as :func:`near_copy` makes them) against their originals give the
scores of genuine duplicates, and each threshold is set so that about ``recall`` (95 %) of them clear
both. The same sample's nearest other gallery images tell how many images the thresholds would
link: when more than :data:`MAX_LINKED_SHARE` of them are, the model and fingerprints cannot tell
copies from look-alikes and the calibration says so (``supported`` False) instead of grouping
different products. The fingerprint check is what lets an untrained model group copies at all.

Nothing is ever deleted: :func:`move_duplicates` moves the non-kept files of chosen groups into a
folder the user names, keeping their relative paths, and never overwrites a file.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simlib.errors import SimlibError
from simlib.search.copies import THUMB_DIM, copy_correlations, thumbnails

MANIFEST_KEY = "duplicate_threshold"  # manifest extra: the calibrated threshold and how it was made
DEFAULT_RECALL = 0.95
# A real folder may hold many copies (a camera roll and its edits), so only a threshold that links most
# sampled images to something says the model cannot tell copies from look-alikes.
MAX_LINKED_SHARE = 0.5
COPY_KINDS = ("resized", "reencoded", "cropped")
# What calibration calls a duplicate: resized and re-encoded copies (a crop changes what the photo shows;
# its recall is measured and stated, not calibrated for).
CALIBRATION_KINDS = ("resized", "reencoded")


@dataclasses.dataclass(frozen=True)
class Member:
    """One image of a duplicate group."""

    id: int
    path: str | None
    width: int
    height: int
    bytes: int
    mtime: float
    score: float  # cosine with the kept image

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Group:
    """A group of near-duplicates: the suggested keep and the others, most similar first."""

    keep: Member
    others: tuple[Member, ...]

    @property
    def ids(self) -> list[int]:
        return [self.keep.id, *(m.id for m in self.others)]

    def to_dict(self) -> dict[str, Any]:
        return {"keep": self.keep.to_dict(), "others": [m.to_dict() for m in self.others]}


def near_copy(image: Any, how: str, seed: int) -> Image.Image:
    """A near-duplicate of ``image``: "resized" (40-70 %), "reencoded" (JPEG quality 30-50) or "cropped" (88-95 %)."""
    from simlib.data import open_image

    rng = np.random.default_rng(seed)
    img = open_image(image, reduce_to=512)
    w, h = img.size
    if how == "resized":
        f = rng.uniform(0.4, 0.7)
        img = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.LANCZOS)
        quality = 90
    elif how == "reencoded":
        quality = int(rng.integers(30, 51))
    elif how == "cropped":
        f = rng.uniform(0.88, 0.95)
        cw, ch = max(1, round(w * f)), max(1, round(h * f))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
        quality = 90
    else:
        raise SimlibError(f"a near copy is resized, reencoded or cropped, not {how!r}")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


class Fingerprints:
    """Pixel fingerprints (:func:`simlib.search.copies.thumbnail`) of gallery images by id, computed when first
    needed and cached in the work folder (float16: 6 KB per image).

    Ids are never reused (a changed file gets a new id), so a cached fingerprint never goes stale; a cache of
    another fingerprint size is ignored.
    """

    FILE = "fingerprints.npz"

    def __init__(self, index, folder: str | os.PathLike | None = None, workers: int | None = None) -> None:
        self.index = index
        self.path = Path(folder) / self.FILE if folder is not None else None
        self.workers = workers
        self.cache: dict[int, np.ndarray] = {}
        self.dirty = False
        if self.path is not None and self.path.is_file():
            with np.load(self.path) as z:
                if z["vectors"].ndim == 2 and z["vectors"].shape[1] == THUMB_DIM:
                    self.cache = {int(i): v.astype(np.float32) for i, v in zip(z["ids"], z["vectors"], strict=True)}

    def of(self, ids: Sequence[int]) -> np.ndarray:
        """Fingerprints of ``ids`` (zeros for an image that can no longer be read)."""
        missing = [int(i) for i in dict.fromkeys(ids) if int(i) not in self.cache]
        if missing:
            paths = [self.index.record(i).path for i in missing]
            # rounded as stored, so that a fingerprint computed now equals the one read back later
            found = thumbnails(paths, self.workers).astype(np.float16).astype(np.float32)
            self.cache.update(zip(missing, found, strict=True))
            self.dirty = True
        return np.stack([self.cache[int(i)] for i in ids]) if len(ids) else np.zeros((0, THUMB_DIM), np.float32)

    def save(self) -> None:
        """Write the cache (when it grew) to the work folder."""
        if self.path is None or not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        alive = [i for i in self.cache if i in self.index]
        tmp = self.path.with_name(f".{self.FILE}.{os.getpid()}.tmp.npz")
        vectors = np.stack([self.cache[i] for i in alive]) if alive else np.zeros((0, THUMB_DIM))
        np.savez(tmp, ids=np.asarray(alive, np.int64), vectors=vectors.astype(np.float16))
        os.replace(tmp, self.path)
        self.dirty = False


def calibrate_duplicates(
    searcher,
    *,
    n: int = 200,
    recall: float = DEFAULT_RECALL,
    kinds: Sequence[str] = CALIBRATION_KINDS,
    seed: int = 0,
    fingerprints: Fingerprints | None = None,
) -> dict[str, Any]:
    """Measure the two duplicate thresholds of ``searcher``'s model on its own gallery; stores them in the manifest.

    Each of ``n`` sampled gallery images (seeded) gets one near-copy of every kind in ``kinds``. The
    model threshold ``score`` is the cosine that ``recall`` of the copies reach with their original;
    the pixel threshold ``pixel_score`` likewise for the thumbnails' correlation (each keeps all but
    half of the ``1 - recall`` misses allowed, so that both together keep about ``recall``). Two images
    are duplicates when they clear both. ``linked_share``: the share of sampled images that would be
    linked to some other gallery image (among its nearest neighbours by the model); over
    :data:`MAX_LINKED_SHARE` the thresholds cannot tell copies from look-alikes (``supported`` False).

    Returns:
        The manifest entry ``{"score", "pixel_score", "recall", "copy_recall", "kinds", "n",
        "linked_share", "supported", "seed", "fingerprint", "calibrated_at", ...}``; save the searcher to keep it.
    """
    if not 0 < recall <= 1:
        raise SimlibError(f"recall must be in (0, 1], not {recall}")
    index = searcher.index
    fingerprints = fingerprints or Fingerprints(index)
    records = [r for r in index.records() if r.path and os.path.isfile(r.path)]
    if len(records) < 5:
        raise SimlibError("duplicate calibration needs at least 5 gallery images with their files")
    rng = np.random.default_rng(seed)
    chosen = [records[i] for i in np.sort(rng.choice(len(records), min(n, len(records)), replace=False))]
    copies, owners, how = [], [], []
    for j, r in enumerate(chosen):
        for k, kind in enumerate(kinds):
            try:
                copies.append(near_copy(r.path, kind, seed * 1_000_003 + j * len(kinds) + k))
            except SimlibError:
                continue  # unreadable since it was indexed
            owners.append(r.id)
            how.append(kind)
    model_pos = np.sum(searcher.embedder.embed_images(copies) * index.vectors_of(owners), axis=1)
    pixel_pos = copy_correlations(copies, fingerprints.of(owners))
    # each threshold lets through all but half the misses allowed, so that both together keep ~`recall`
    score = float(np.quantile(model_pos, (1 - recall) / 2, method="lower"))
    pixel_score = float(np.quantile(pixel_pos, (1 - recall) / 2, method="lower"))
    found = (model_pos >= score) & (pixel_pos >= pixel_score)
    how_arr = np.asarray(how)
    copy_recall = {kind: float(found[how_arr == kind].mean()) for kind in kinds if (how_arr == kind).any()}
    # how many sampled images both thresholds link to another gallery image
    ids_chosen = [r.id for r in chosen]
    scores, ids = index.search(index.vectors_of(ids_chosen), 9)
    linked = by_model = 0
    for a, srow, irow in zip(ids_chosen, scores, ids, strict=True):
        others = [int(i) for s, i in zip(srow, irow, strict=True) if i >= 0 and i != a and s >= score]
        if others:
            by_model += 1
            pix = fingerprints.of(others) @ fingerprints.of([a])[0]
            linked += bool((pix >= pixel_score).any())
    share = linked / len(chosen)
    info = {
        "score": score,
        "pixel_score": pixel_score,
        "recall": recall,
        "copy_recall": copy_recall,
        "kinds": list(kinds),
        "n": len(chosen),
        "copy_scores": {"model_median": float(np.median(model_pos)), "pixel_median": float(np.median(pixel_pos))},
        "linked_share": share,
        "linked_share_model_only": by_model / len(chosen),
        "supported": share <= MAX_LINKED_SHARE,
        "seed": seed,
        "fingerprint": searcher.fingerprint,
        "calibrated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    m = index.manifest
    index.manifest = m.replace(extra={**m.extra, MANIFEST_KEY: info})
    return info


def stored_calibration(searcher) -> dict[str, Any] | None:
    """The duplicate thresholds calibrated for this index's model, or None."""
    info = searcher.index.manifest.extra.get(MANIFEST_KEY)
    ok = isinstance(info, dict) and info.get("fingerprint") == searcher.fingerprint and "pixel_score" in info
    return info if ok else None


@dataclasses.dataclass(frozen=True)
class Review:
    """A gallery's near-duplicate groups and the thresholds that made them (what ``simlib duplicates`` prints
    and the app's panel shows).

    Attributes:
        groups: the groups, largest first.
        threshold: the cosine that links two images.
        pixel_threshold: the fingerprint correlation they must also reach (None: not checked).
        calibration: the calibration used (None with a given threshold and none stored).
        calibrated_now: whether this review calibrated (save the searcher to keep it).
    """

    groups: tuple[Group, ...]
    threshold: float
    pixel_threshold: float | None
    calibration: dict[str, Any] | None
    calibrated_now: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"threshold", "pixel_threshold", "calibration", "groups": [{"keep", "others"}]}``."""
        body = {"threshold": self.threshold, "pixel_threshold": self.pixel_threshold, "calibration": self.calibration}
        return {**body, "groups": [g.to_dict() for g in self.groups]}


def review_duplicates(
    searcher,
    fingerprints: Fingerprints,
    *,
    threshold: float | None = None,
    recalibrate: bool = False,
    force: bool = False,
    seed: int = 0,
) -> Review:
    """The near-duplicate groups of ``searcher``'s gallery at its model's calibrated thresholds (calibrated now
    when none is stored, or with ``recalibrate``), or at a given cosine ``threshold``.

    Raises:
        SimlibError: the calibration says the model cannot tell near-copies from look-alikes (unless ``force``
            or a ``threshold`` is given).
    """
    info = stored_calibration(searcher)
    fresh = threshold is None and (info is None or recalibrate)
    if fresh:
        info = calibrate_duplicates(searcher, seed=seed, fingerprints=fingerprints)
    if threshold is None and not info["supported"] and not force:
        raise SimlibError(
            f"this model cannot tell near-copies from different images: at the thresholds that keep 95 % of "
            f"near-copies, {info['linked_share']:.0%} of sampled images would be grouped with another one; "
            "use a trained model, or pass --threshold T (or --force) knowingly"
        )
    cosine = threshold if threshold is not None else float(info["score"])
    pixel = float(info["pixel_score"]) if info is not None else None
    groups = find_duplicates(searcher.index, cosine, pixel_threshold=pixel, fingerprints=fingerprints)
    return Review(tuple(groups), cosine, pixel, info, fresh)


def find_duplicates(
    index,
    threshold: float,
    *,
    pixel_threshold: float | None = None,
    fingerprints: Fingerprints | None = None,
    k: int = 8,
    max_k: int = 64,
    batch: int = 1024,
) -> list[Group]:
    """Groups of gallery images linked by cosine >= ``threshold`` (and, when given, a pixel
    fingerprint cosine >= ``pixel_threshold``); see the module's doc.

    ``k`` neighbours are fetched per image, doubled up to ``max_k`` for images whose k-th neighbour
    still clears ``threshold``: a group links through at most ``max_k`` neighbours per image.

    Returns:
        Groups of two or more, largest first, then by the keep's id.
    """
    ids = np.asarray(index.ids, np.int64)
    n = len(ids)
    parent = {int(i): int(i) for i in ids}
    if pixel_threshold is not None and fingerprints is None:
        fingerprints = Fingerprints(index)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for start in range(0, n, batch):
        chunk = ids[start : start + batch]
        vectors = index.vectors_of(chunk.tolist())
        todo = np.arange(len(chunk))
        kk = min(k, n)
        edges: set[tuple[int, int]] = set()
        while len(todo):
            scores, found = index.search(vectors[todo], kk)
            again = []
            for row, srow, irow in zip(todo, scores, found, strict=True):
                a = int(chunk[row])
                for s, b in zip(srow, irow, strict=True):
                    if b >= 0 and int(b) != a and s >= threshold:
                        edges.add((min(a, int(b)), max(a, int(b))))
                if kk < min(n, max_k) and srow[-1] >= threshold:  # the k-th still clears it: there may be more
                    again.append(row)
            todo = np.asarray(again, np.int64)
            kk = min(2 * kk, n, max_k)
        pairs = sorted(edges)
        if pixel_threshold is not None and pairs:
            fa = fingerprints.of([a for a, _ in pairs])
            fb = fingerprints.of([b for _, b in pairs])
            keep = np.sum(fa * fb, axis=1) >= pixel_threshold
            pairs = [p for p, ok in zip(pairs, keep, strict=True) if ok]
        for a, b in pairs:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for i in parent:
        members.setdefault(find(i), []).append(i)
    groups = []
    for group_ids in members.values():
        if len(group_ids) < 2:
            continue
        info = [_member(index, i) for i in sorted(group_ids)]
        keep = min(info, key=lambda m: (-m.pixels, m.mtime, m.id))
        kv = index.vectors_of([keep.id])[0]
        others = [m for m in info if m.id != keep.id]
        others_v = index.vectors_of([m.id for m in others])
        scored = [dataclasses.replace(m, score=float(v @ kv)) for m, v in zip(others, others_v, strict=True)]
        scored.sort(key=lambda m: (-m.score, m.id))
        groups.append(Group(dataclasses.replace(keep, score=1.0), tuple(scored)))
    groups.sort(key=lambda g: (-len(g.others), g.keep.id))
    return groups


def _member(index, id_: int) -> Member:
    r = index.record(id_)
    width = height = size = 0
    mtime = float("inf")
    if r.path:
        try:
            st = os.stat(r.path)
            size, mtime = st.st_size, st.st_mtime
            with Image.open(r.path) as img:  # the header only: no pixels decoded
                width, height = img.size
        except Exception:  # gone or unreadable since it was indexed: it is never the suggested keep
            pass
    return Member(int(id_), r.path, int(width), int(height), int(size), float(mtime), 0.0)


def pair_scores(groups: Sequence[Group]) -> set[frozenset[str]]:
    """Every pair of paths in the same group (to compare groups with a planted truth)."""
    pairs = set()
    for g in groups:
        paths = [m.path for m in (g.keep, *g.others) if m.path]
        pairs |= {frozenset((a, b)) for i, a in enumerate(paths) for b in paths[i + 1 :]}
    return pairs


def contact_sheet(groups: Sequence[Group], out: str | os.PathLike, *, thumb: int = 128, max_groups: int = 50) -> Path:
    """One row per group: the keep (green frame) then the others (red frame), each with its size and score."""
    from PIL import ImageDraw

    from simlib.data import open_image

    rows = list(groups[:max_groups])
    if not rows:
        raise SimlibError("no duplicate groups to draw")
    cols = max(1 + len(g.others) for g in rows)
    cell_w, cell_h = thumb + 8, thumb + 30
    sheet = Image.new("RGB", (cols * cell_w, len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for y, g in enumerate(rows):
        for x, m in enumerate((g.keep, *g.others)):
            x0, y0 = x * cell_w, y * cell_h
            draw.rectangle(
                [x0 + 1, y0 + 1, x0 + thumb + 6, y0 + thumb + 6], outline="green" if x == 0 else "red", width=3
            )
            try:
                img = open_image(m.path, reduce_to=thumb)
                img.thumbnail((thumb, thumb))
                sheet.paste(img, (x0 + 4 + (thumb - img.width) // 2, y0 + 4 + (thumb - img.height) // 2))
            except SimlibError:
                draw.text((x0 + 8, y0 + thumb // 2), "unreadable", fill="black")
            label = ("KEEP " if x == 0 else f"{m.score:.3f} ") + f"{m.width}x{m.height}"
            draw.text((x0 + 4, y0 + thumb + 10), label, fill="black")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def move_duplicates(groups: Sequence[Group], root: str | os.PathLike, to: str | os.PathLike) -> dict[str, str]:
    """Move every non-kept file of ``groups`` from under ``root`` into ``to`` (same relative path).

    Never overwrites: a name already taken gets ``-1``, ``-2``, ... before its suffix. Files outside
    ``root`` keep only their name. Returns source -> destination for each file moved.
    """
    root, to = Path(root).resolve(), Path(to).expanduser().resolve()
    if to == root or root in to.parents:
        raise SimlibError(f"--move-to {to} is inside the photo folder: the next sync would index the copies again")
    moved: dict[str, str] = {}
    for g in groups:
        for m in g.others:
            if not m.path or not os.path.isfile(m.path):
                continue
            src = Path(m.path)
            rel = src.relative_to(root) if root in src.parents else Path(src.name)
            dst = to / rel
            n = 0
            while dst.exists():
                n += 1
                dst = (to / rel).with_name(f"{rel.stem}-{n}{rel.suffix}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
            moved[str(src)] = str(dst)
    return moved
