"""Near-duplicates across a whole gallery: groups, a suggested keep, a contact sheet, moving copies aside.

:func:`find_duplicates` links every pair of gallery images whose cosine is at least a threshold,
found with the index's own k-nearest-neighbour search batch by batch (``k`` grows only for images
whose k-th neighbour still clears the threshold): memory grows with the gallery, never with its
square. Linked images form groups (connected components); each group suggests one image to keep:
the largest resolution, then the oldest file, then the lowest id.

The threshold depends on the model (an untrained backbone puts different products at cosines a
trained one keeps for copies), so :func:`calibrate_duplicates` measures it on the gallery itself:
seeded near-copies of sampled gallery images (resized to 40-70 %, re-encoded at JPEG quality 30-50,
cropped to 88-95 %, as :func:`near_copy` makes them) against their originals give the scores of genuine
duplicates; the threshold is the score that ``recall`` of them clear. The same sample's nearest
*other* gallery images tell how many distinct images the threshold would also link: when more than
:data:`MAX_LINKED_SHARE` of them clear it, the model cannot tell copies from look-alikes and the
calibration says so (``supported`` False) instead of grouping different products.

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

MANIFEST_KEY = "duplicate_threshold"  # manifest extra: the calibrated threshold and how it was made
DEFAULT_RECALL = 0.95
MAX_LINKED_SHARE = 0.2
COPY_KINDS = ("resized", "reencoded", "cropped")


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


def calibrate_duplicates(
    searcher,
    *,
    n: int = 200,
    recall: float = DEFAULT_RECALL,
    kinds: Sequence[str] = COPY_KINDS,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure the duplicate threshold of ``searcher``'s model on its own gallery; stores it in the manifest.

    Args:
        searcher: a :class:`~simlib.search.Searcher` whose records have image files.
        n: gallery images sampled (seeded); each gets one near-copy of every kind in ``kinds``.
        recall: the share of near-copies whose score with their original must clear the threshold.
        kinds: the near-copy kinds (see :func:`near_copy`).
        seed: sampling and perturbation seed.

    Returns:
        The manifest entry ``{"score", "recall", "kinds", "n", "linked_share", "supported", "seed",
        "fingerprint", "calibrated_at"}``; save the searcher to keep it.
    """
    if not 0 < recall <= 1:
        raise SimlibError(f"recall must be in (0, 1], not {recall}")
    index = searcher.index
    records = [r for r in index.records() if r.path and os.path.isfile(r.path)]
    if len(records) < 5:
        raise SimlibError("duplicate calibration needs at least 5 gallery images with their files")
    rng = np.random.default_rng(seed)
    chosen = [records[i] for i in np.sort(rng.choice(len(records), min(n, len(records)), replace=False))]
    copies, owners = [], []
    for j, r in enumerate(chosen):
        for k, how in enumerate(kinds):
            try:
                copies.append(near_copy(r.path, how, seed * 1_000_003 + j * len(kinds) + k))
                owners.append(r.id)
            except SimlibError:
                continue  # an unreadable file since it was indexed
    vectors = searcher.embedder.embed_images(copies)
    originals = index.vectors_of(owners)
    positives = np.sum(vectors * originals, axis=1)
    score = float(np.quantile(positives, 1 - recall, method="lower"))
    # how many sampled images the threshold links to a gallery image other than themselves
    own = index.vectors_of([r.id for r in chosen])
    scores, ids = index.search(own, 2)
    nearest = []
    for srow, irow, r in zip(scores, ids, chosen, strict=True):
        others = [s for s, i in zip(srow, irow, strict=True) if i >= 0 and i != r.id]
        nearest.append(others[0] if others else -1.0)
    nearest = np.asarray(nearest, np.float64)
    linked = float(np.mean(nearest >= score))
    info = {
        "score": score,
        "recall": recall,
        "kinds": list(kinds),
        "n": len(chosen),
        "copy_scores": {"min": float(positives.min()), "median": float(np.median(positives))},
        "nearest_other_median": float(np.median(nearest)),
        "linked_share": linked,
        "supported": linked <= MAX_LINKED_SHARE,
        "seed": seed,
        "fingerprint": searcher.fingerprint,
        "calibrated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    m = index.manifest
    index.manifest = m.replace(extra={**m.extra, MANIFEST_KEY: info})
    return info


def stored_calibration(searcher) -> dict[str, Any] | None:
    """The duplicate threshold calibrated for this index's model, or None."""
    info = searcher.index.manifest.extra.get(MANIFEST_KEY)
    return info if isinstance(info, dict) and info.get("fingerprint") == searcher.fingerprint else None


def find_duplicates(index, threshold: float, *, k: int = 8, batch: int = 1024) -> list[Group]:
    """Groups of gallery images linked by cosine >= ``threshold`` (see the module's doc).

    Returns:
        Groups of two or more, largest first, then by the keep's id.
    """
    ids = np.asarray(index.ids, np.int64)
    n = len(ids)
    parent = {int(i): int(i) for i in ids}

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
        while len(todo):
            scores, found = index.search(vectors[todo], kk)
            again = []
            for row, (srow, irow) in zip(todo, zip(scores, found, strict=True), strict=True):
                a = int(chunk[row])
                for s, b in zip(srow, irow, strict=True):
                    b = int(b)
                    if b < 0 or b == a or s < threshold:
                        continue
                    ra, rb = find(a), find(b)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
                if kk < n and srow[-1] >= threshold:  # the k-th still clears it: there may be more
                    again.append(row)
            todo = np.asarray(again, np.int64)
            kk = min(2 * kk, n)
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
        others_v = index.vectors_of([m.id for m in info if m.id != keep.id])
        others = [m for m in info if m.id != keep.id]
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
