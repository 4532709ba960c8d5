"""A seeded messy photo folder made from product images: what a real ``~/Pictures`` throws at simlib.

Shared by the tests (small, tiny sides) and ``bench_folder`` (thousands of camera-sized JPEGs):

- nested sub-folders (1-3 levels), some images at the top;
- photos upscaled to ``side`` px (3,000-4,000 in the benchmark) as JPEGs, a share of them stored
  rotated with the EXIF orientation that turns them upright;
- PNG with alpha, CMYK JPEG, 16-bit grayscale PNG, animated GIF and WebP, HEIC (when pillow-heif can
  write it);
- planted near-duplicates of some originals (resized, re-encoded at low quality, cropped) and exact
  byte copies, recorded as groups;
- hostile entries: a text file, a text file named ``.jpg``, an empty file, a truncated JPEG, a hidden
  file and a hidden folder, a broken symlink, a symlink loop, a second symlink to an image.

Everything depends only on ``seed`` and the source images; :class:`MessyFolder` records what was
planted so tests and the benchmark can check the scan, the decoding and the duplicate groups.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("jpeg", "jpeg_exif", "png_alpha", "cmyk", "gray16", "gif_anim", "webp_anim", "heic")
COPY_KINDS = ("resized", "reencoded", "cropped", "exact")
ORIENTATIONS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@dataclasses.dataclass
class MessyFolder:
    """What :func:`make_messy_folder` wrote.

    Attributes:
        root: the folder.
        images: path -> (kind, source index): every file that should be indexed.
        groups: lists of paths that are copies of one original (the original first): the planted duplicates.
        copy_kind: path of a planted copy -> how it was made (resized, reencoded, cropped, exact).
        hostile: path -> what it is (each should be skipped with a reason, never crash).
    """

    root: Path
    images: dict[str, tuple[str, int]]
    groups: list[list[str]]
    copy_kind: dict[str, str]
    hostile: dict[str, str]


def upright(img: Image.Image, side: int) -> Image.Image:
    """``img`` upscaled so that its long side is ``side`` (bicubic: smooth, as a camera photo of a product)."""
    w, h = img.size
    scale = side / max(w, h)
    return img.convert("RGB").resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)


def write_kind(img: Image.Image, kind: str, path_stem: Path, rng: np.random.Generator, quality: int = 90) -> Path:
    """Write the RGB image ``img`` as ``kind``; returns the file written."""
    if kind == "jpeg":
        path = path_stem.with_suffix(".jpg")
        img.save(path, "JPEG", quality=quality)
    elif kind == "jpeg_exif":
        path = path_stem.with_suffix(".jpg")
        orientation = int(rng.choice(list(ORIENTATIONS)))
        exif = Image.Exif()
        exif[0x0112] = orientation
        # stored turned the other way: exif_transpose applies ORIENTATIONS' inverse to show it upright
        stored = img.transpose(ORIENTATIONS[orientation])
        stored.save(path, "JPEG", quality=quality, exif=exif.tobytes())
    elif kind == "png_alpha":
        path = path_stem.with_suffix(".png")
        a = np.asarray(img)
        alpha = np.where(a.min(axis=2) > 240, 0, 255).astype(np.uint8)  # the white background transparent
        Image.fromarray(np.dstack([a, alpha]), "RGBA").save(path, "PNG")
    elif kind == "cmyk":
        path = path_stem.with_suffix(".jpg")
        img.convert("CMYK").save(path, "JPEG", quality=quality)
    elif kind == "gray16":
        path = path_stem.with_suffix(".png")
        g = np.asarray(img.convert("L"), np.uint16) * 257
        Image.fromarray(g, "I;16").save(path, "PNG")
    elif kind in ("gif_anim", "webp_anim"):
        second = Image.fromarray(255 - np.asarray(img))
        if kind == "gif_anim":
            path = path_stem.with_suffix(".gif")
            img.save(path, "GIF", save_all=True, append_images=[second], duration=200, loop=0)
        else:
            path = path_stem.with_suffix(".webp")
            img.save(path, "WEBP", save_all=True, append_images=[second], duration=200, quality=quality)
    elif kind == "heic":
        path = path_stem.with_suffix(".heic")
        import pillow_heif

        pillow_heif.register_heif_opener()
        img.save(path, "HEIF", quality=quality)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return path


def heic_writable() -> bool:
    """Whether pillow-heif is installed here (HEIC files are then planted)."""
    try:
        import pillow_heif  # noqa: F401
    except Exception:
        return False
    return True


def make_messy_folder(
    out: str | os.PathLike,
    sources: Sequence[str],
    *,
    seed: int,
    side: tuple[int, int] = (3000, 4000),
    n_copied: int | None = None,
    copies_per_original: int = 2,
    exact_copies: int | None = None,
    kinds: Sequence[str] = KINDS,
    hostile: bool = True,
    workers: int = 1,
) -> MessyFolder:
    """Write a messy folder under ``out`` (created; must not exist or be empty) from ``sources``.

    Args:
        out: the folder.
        sources: product image files, one photo each (each used once as an original).
        seed: everything random comes from this seed (each image from ``(seed, its number)``, so the
            folder is the same whatever ``workers``).
        side: the long side of each photo is drawn uniformly in this range.
        n_copied: originals that get near-duplicates (default: 10 %).
        copies_per_original: near-duplicates per such original (kinds drawn from resized, reencoded, cropped).
        exact_copies: originals that also get a byte-identical copy elsewhere (default: 5 %).
        kinds: the file kinds originals are written as, cycled in a seeded order ("heic" is dropped
            when pillow-heif is missing).
        hostile: add the hostile entries.
        workers: processes writing images (1: in this process).
    """
    rng = np.random.default_rng(seed)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in kinds if k != "heic" or heic_writable()]
    folders = [Path(".")] + [Path(*[f"d{rng.integers(0, 4)}" for _ in range(depth)]) for depth in (1, 2, 3, 1, 2, 2)]
    n = len(sources)
    n_copied = max(1, n // 10) if n_copied is None else n_copied
    exact_copies = max(1, n // 20) if exact_copies is None else exact_copies
    order = rng.permutation(n)
    kind_offset = int(rng.integers(0, len(kinds)))
    copied = set(order[:n_copied].tolist())
    exact = set(order[n_copied : n_copied + exact_copies].tolist())
    jobs = [
        (root, str(src), i, seed, kinds[(i + kind_offset) % len(kinds)], folders, side, i in copied,
         copies_per_original, i in exact)
        for i, src in enumerate(sources)
    ]  # fmt: skip
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_write_one, jobs, chunksize=16)
    else:
        results = [_write_one(job) for job in jobs]
    images: dict[str, tuple[str, int]] = {}
    groups: list[list[str]] = []
    copy_kind: dict[str, str] = {}
    for written, group in results:
        for path, kind, i, how in written:
            images[path] = (kind, i)
            if how:
                copy_kind[path] = how
        if len(group) > 1:
            groups.append(group)
    a_jpeg = next((p for p in images if p.endswith(".jpg")), next(iter(images)))
    bad = _hostile(root, a_jpeg) if hostile else {}
    return MessyFolder(root=root, images=images, groups=groups, copy_kind=copy_kind, hostile=bad)


def _write_one(job) -> tuple[list[tuple[str, str, int, str | None]], list[str]]:
    """One original (and its copies): ``([(path, kind, source index, copy kind or None)], group)``."""
    root, src, i, seed, kind, folders, side, copied, copies_per_original, exact = job
    rng = np.random.default_rng([seed, i])
    folder = root / folders[int(rng.integers(0, len(folders)))]
    folder.mkdir(parents=True, exist_ok=True)
    photo = upright(Image.open(src), int(rng.integers(side[0], side[1] + 1)))
    path = write_kind(photo, kind, folder / f"img{i:06d}", rng)
    written = [(str(path), kind, i, None)]
    group = [str(path)]
    if copied:
        from simlib.data import open_image

        shown = open_image(path)  # copies are made from the file as it shows (grey, 256 colours, ...)
        for c in range(copies_per_original):
            how = COPY_KINDS[int(rng.integers(0, 3))]
            copy = _near_copy(shown, how, rng)
            cfolder = root / folders[int(rng.integers(0, len(folders)))]
            cfolder.mkdir(parents=True, exist_ok=True)
            cpath = cfolder / f"img{i:06d}-{how}{c}.jpg"
            copy.save(cpath, "JPEG", quality=55 if how == "reencoded" else 90)
            written.append((str(cpath), "jpeg", i, how))
            group.append(str(cpath))
    if exact:
        efolder = root / "copies"
        efolder.mkdir(exist_ok=True)
        epath = efolder / f"copy-of-img{i:06d}{path.suffix}"
        shutil.copyfile(path, epath)
        written.append((str(epath), kind, i, "exact"))
        group.append(str(epath))
    return written, group


def _near_copy(photo: Image.Image, how: str, rng: np.random.Generator) -> Image.Image:
    w, h = photo.size
    if how == "resized":
        f = rng.uniform(0.4, 0.7)
        return photo.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.LANCZOS)
    if how == "reencoded":
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=int(rng.integers(30, 50)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    f = rng.uniform(0.88, 0.95)  # cropped
    cw, ch = round(w * f), round(h * f)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return photo.crop((x0, y0, x0 + cw, y0 + ch))


def _hostile(root: Path, an_image: str) -> dict[str, str]:
    """The entries a scan must skip (with a reason) and decoding must survive."""
    bad: dict[str, str] = {}
    junk = root / "junk"
    junk.mkdir(exist_ok=True)
    (junk / "notes.txt").write_text("not an image\n")
    bad[str(junk / "notes.txt")] = "not an image file name"
    (junk / "fake.jpg").write_text("this is text with a .jpg name\n")
    bad[str(junk / "fake.jpg")] = "not an image"
    (junk / "empty.png").write_bytes(b"")
    bad[str(junk / "empty.png")] = "empty file"
    data = Path(an_image).read_bytes()
    Image.open(an_image).convert("RGB").save(junk / "truncated.jpg", "JPEG", quality=90)
    whole = (junk / "truncated.jpg").read_bytes()
    (junk / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    bad[str(junk / "truncated.jpg")] = "truncated"
    (root / ".hidden.jpg").write_bytes(data)
    bad[str(root / ".hidden.jpg")] = "hidden"
    (root / ".thumbnails").mkdir(exist_ok=True)
    (root / ".thumbnails" / "t.jpg").write_bytes(data)
    bad[str(root / ".thumbnails")] = "hidden"
    (junk / "broken-link.jpg").symlink_to(root / "does-not-exist.jpg")
    bad[str(junk / "broken-link.jpg")] = "broken symlink"
    (junk / "loop").symlink_to("..", target_is_directory=True)
    bad[str(junk / "loop")] = "symlink loop"
    (junk / "second-link.jpg").symlink_to(an_image)
    bad[str(junk / "second-link.jpg")] = "another link"
    return bad
