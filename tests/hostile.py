"""A corpus of hostile inputs, generated on the spot (nothing is downloaded).

:func:`write_corpus` fills a folder with the files a real user's gallery or upload can hold:
broken, disguised, huge, exotic and unreadable ones next to valid images in every mode. Each
entry says what simlib must do with it:

- ``good``: a valid image; indexed, and answers as a query.
- ``bad``: named like an image but unusable; indexing skips it and lists it by name with a reason,
  a query fails with one clear :class:`~simlib.errors.SimlibError`.
- ``ignored``: not an image file by name or type (a folder, an ``.svg``, a looping folder link);
  indexing passes over it silently (folders are walked, links to folders not followed); as a
  query it fails with one clear error like ``bad``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


@dataclasses.dataclass(frozen=True)
class Hostile:
    """One corpus entry: its path, what kind of thing it is and what simlib must do with it."""

    path: Path
    kind: str
    expected: str  # good | bad | ignored


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, rows: int | None = None) -> bytes:
    """A small RGB PNG whose header declares ``width`` x ``height`` pixels, all black.

    Zeros compress about 1000:1, so a decompression bomb stays small: 8000 x 8000 (192 MB decoded)
    is a 190 kB file. ``rows`` stores only that many rows (a truncated stream; for sizes that would
    take long to compress, such as 30000 x 30000).
    """
    comp = zlib.compressobj()
    block = b"\x00" * (1 + 3 * width) * 100
    n_blocks = -(-(height if rows is None else rows) // 100)
    idat = b"".join(comp.compress(block) for _ in range(n_blocks)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An RGB test picture with large flat blocks (survives JPEG), different in every quadrant."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(4, 3), dtype=np.uint8)
    a = np.empty((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    a[:h2, :w2], a[:h2, w2:], a[h2:, :w2], a[h2:, w2:] = colours
    return a


def upright_and_rotated(width: int = 48, height: int = 24) -> tuple[Image.Image, bytes]:
    """An upright picture and a JPEG of it stored sideways with EXIF orientation 6 (rotate 90° CW to view)."""
    upright = Image.fromarray(pattern(width, height, seed=7))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return upright, buf.getvalue()


def _save(img: Image.Image, path: Path, fmt: str | None = None, **kw) -> None:
    img.save(path, fmt, **kw)


def write_corpus(folder: str | os.PathLike, seed: int = 0) -> list[Hostile]:
    """Write the hostile corpus into ``folder`` (created) and return its entries.

    Args:
        folder: where to write; should be empty.
        seed: seeds the image contents.

    Returns:
        One :class:`Hostile` per entry (more than 30 kinds). The unreadable-permission file is only
        written when not running as root (root reads it anyway), the FIFO only where ``os.mkfifo`` exists.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: list[Hostile] = []

    def add(name: str, kind: str, expected: str) -> Path:
        out.append(Hostile(root / name, kind, expected))
        return root / name

    rgb = Image.fromarray(pattern(60, 80, seed))
    # --- valid images in every mode and format
    _save(rgb, add("plain.jpg", "baseline RGB JPEG", "good"))
    _save(rgb, add("UPPER CASE.JPG", "upper-case extension", "good"), "JPEG")
    _save(Image.new("RGB", (1, 1), (200, 10, 10)), add("one_pixel.png", "1x1 image", "good"))
    _save(Image.new("RGB", (10000, 1), (10, 10, 200)), add("wide_10000x1.png", "10000x1 sliver", "good"))
    _save(Image.new("L", (1, 10000), 30), add("tall_1x10000.png", "1x10000 sliver", "good"))
    _save(rgb.convert("CMYK"), add("cmyk.jpg", "CMYK JPEG", "good"))
    gray16 = (rng.integers(0, 65536, size=(40, 30))).astype(np.uint16)
    _save(Image.fromarray(gray16), add("gray16.png", "16-bit grayscale PNG", "good"))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    _save(pal, add("palette_transparent.png", "palette PNG with transparency", "good"), transparency=0)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, size=(80, 60), dtype=np.uint8)))
    _save(rgba, add("rgba.png", "RGBA PNG", "good"))
    _save(rgb.convert("LA"), add("la.png", "grayscale+alpha (LA) PNG", "good"))
    _save(rgb.convert("1"), add("bilevel.png", "1-bit PNG", "good"))
    _, rotated = upright_and_rotated()
    add("exif_rotated.jpg", "EXIF-rotated JPEG (orientation 6)", "good").write_bytes(rotated)
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    _save(frames[0], add("animated.gif", "animated GIF", "good"), save_all=True, append_images=frames[1:])
    _save(rgb, add("image.webp", "WebP", "good"), "WEBP")
    _save(rgb, add("image.bmp", "BMP", "good"))
    _save(rgb, add("image.tiff", "TIFF", "good"))
    floats = Image.fromarray(rng.random((20, 30), dtype=np.float32))
    _save(floats, add("float32.tiff", "32-bit float TIFF (mode F)", "good"))
    _save(rgb, add("héllo wörld 画像.jpg", "unicode and spaces in the name", "good"))
    _save(rgb, add(os.fsdecode(b"caf\xe9 latin-1.png"), "file name that is not valid UTF-8", "good"))
    sub = root / "sub folder"
    sub.mkdir()
    _save(rgb, add("sub folder/nested image.png", "image in a sub-folder with a space", "good"))
    huge = add("huge_sparse.png", "300 MB file holding a small valid PNG", "good")
    huge.write_bytes(png_declaring(16, 16))
    os.truncate(huge, 300 * 2**20)  # sparse: no disk used, but 300 MB to anyone who reads it all

    # --- named like images, but not usable
    buf = io.BytesIO()
    rgb.save(buf, "JPEG")
    add("truncated.jpg", "truncated JPEG", "bad").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    rgb.save(buf, "PNG")
    add("truncated.png", "truncated PNG", "bad").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    add("empty.jpg", "zero-byte file", "bad").write_bytes(b"")
    add("notes.jpg", "text file named .jpg", "bad").write_text("just some text, not an image\n")
    add("page.png", "HTML named .png", "bad").write_text("<!doctype html><html><body><img src=x></body></html>\n")
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>\n'
    add("vector.png", "SVG named .png", "bad").write_text(svg)
    add("bomb_30000.png", "PNG declaring 30000x30000 (Pillow's own bomb limit)", "bad").write_bytes(
        png_declaring(30000, 30000, rows=100)
    )
    add("bomb_8000.png", "PNG declaring 8000x8000 (over simlib's pixel limit)", "bad").write_bytes(
        png_declaring(8000, 8000)
    )
    os.symlink("loop.jpg", add("loop.jpg", "symlink pointing at itself", "bad"))
    os.symlink("no-such-target.png", add("dangling.png", "dangling symlink", "bad"))
    if hasattr(os, "mkfifo"):
        os.mkfifo(add("fifo.jpg", "FIFO named .jpg (opening it would block)", "bad"))
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        locked = add("no_permission.jpg", "file without read permission", "bad")
        _save(rgb, locked, "JPEG")
        locked.chmod(0)

    # --- not image files at all
    add("drawing.svg", "SVG", "ignored").write_text(svg)
    (root / "folder.jpg").mkdir()
    out.append(Hostile(root / "folder.jpg", "folder named like an image", "ignored"))
    os.symlink(".", add("loop_dir", "symlink to its own folder (a loop for a walker)", "ignored"))
    return out
