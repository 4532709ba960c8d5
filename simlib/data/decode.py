"""The one place an untrusted image is decoded and resized (see SECURITY.md)."""

from __future__ import annotations

import io
import os
import stat
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from simlib.errors import SimlibError

# Refuse images whose header declares more pixels than this before decoding them:
# a decompression bomb (a tiny PNG declaring 30000x30000) must never reach memory.
MAX_PIXELS = 40_000_000
# HEIC/HEIF (phone photos) are read through pillow-heif, a maintained Pillow plug-in, when it is installed.
HEIF_EXTENSIONS = (".heic", ".heif")
_heif: list[bool] = []  # [registered?] once tried


def heif_available() -> bool:
    """Whether HEIC/HEIF files can be read (pillow-heif installed and registered with Pillow)."""
    if not _heif:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif.append(True)
        except Exception:  # not installed, or a broken build: HEIC files are skipped with a reason
            _heif.append(False)
    return _heif[0]


def open_image(
    source: Any, max_pixels: int = MAX_PIXELS, *, reduce_to: int | None = None, name: str | None = None
) -> Image.Image:
    """Open any supported image as an upright 8-bit RGB PIL image.

    Accepts a path, bytes, a PIL image or a numpy array (H, W), (H, W, 1|3|4), uint8 or
    float. Handles every Pillow mode (L, LA, P, RGBA, CMYK, I;16, F), EXIF orientation and
    transparency (composited on white), takes the first frame of animations (GIF, WebP, APNG)
    and reads HEIC/HEIF through pillow-heif when it is installed.

    Args:
        source: the image.
        max_pixels: refuse images whose header declares more pixels (checked before decoding).
        reduce_to: decode at a reduced size whose short side is still at least this many pixels
            (JPEG: the decoder's DCT scaling, ``draft``; other formats: ``Image.reduce`` after
            decoding): a 4000x3000 camera photo headed for a 64 px model never lands in memory at
            full size. None: full size.
        name: how error messages call the image (default: its path, or "uploaded image" for bytes).

    Raises:
        SimlibError: the file is missing, not an image, corrupt, or declares too many pixels.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, max_pixels)
    if isinstance(source, Image.Image):
        img = source
        name = "image"
    else:
        is_bytes = isinstance(source, bytes | bytearray)
        if not (is_bytes or isinstance(source, str | os.PathLike) or hasattr(source, "read")):
            raise SimlibError(f"cannot read an image from a {type(source).__name__}: pass a path, bytes or an image")
        is_path = isinstance(source, str | os.PathLike)
        if name is None:
            name = str(source) if is_path else "uploaded image" if is_bytes else str(getattr(source, "name", "image"))
        if not heif_available() and is_path and str(source).lower().endswith(HEIF_EXTENSIONS):
            raise SimlibError(f"{name}: HEIC/HEIF needs the pillow-heif plug-in (pip install 'simlib[heic]')")
        try:
            if is_path:
                _check_regular_file(source, name)
            img = Image.open(io.BytesIO(source) if is_bytes else source)
        except SimlibError:
            raise
        except FileNotFoundError:
            raise SimlibError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise SimlibError(f"{name}: is a folder, not an image") from None
        except PermissionError:
            raise SimlibError(f"{name}: permission denied") from None
        except UnidentifiedImageError:
            raise SimlibError(f"{name}: not an image Pillow can read (jpg, png, webp, bmp, gif, tiff)") from None
        except Image.DecompressionBombError:
            raise SimlibError(f"{name}: declares too many pixels (decompression bomb?)") from None
        except Exception as e:  # OSError (symlink loop, I/O), ValueError (NUL in path), a Pillow plugin's own
            raise SimlibError(f"{name}: corrupt or unreadable image ({type(e).__name__}: {e})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise SimlibError(f"{name}: {w}x{h} is over the {max_pixels:,}-pixel limit; refused before decoding")
    if w < 1 or h < 1:
        raise SimlibError(f"{name}: has no pixels")
    try:
        img.seek(0)
        if reduce_to is not None and img.format in ("JPEG", "MPO"):  # MPO: a camera JPEG with a second picture
            # DCT scaling: decode at 1/2, 1/4 or 1/8 while both sides stay >= reduce_to
            img.draft(img.mode, (reduce_to, reduce_to))
        img.load()
        if reduce_to is not None:
            factor = min(img.size) // max(1, reduce_to)
            if factor >= 2 and img.mode in ("L", "LA", "RGB", "RGBA", "CMYK", "I", "F"):
                img = img.reduce(factor)
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except SimlibError:
        raise
    except Exception as e:  # malformed files make Pillow's decoders raise many types (struct.error, IndexError, ...)
        raise SimlibError(f"{name}: corrupt or truncated image ({type(e).__name__}: {e})") from None


def _check_regular_file(path: Any, name: str) -> None:
    # Opening a FIFO blocks until someone writes to it, and a device never ends: look before opening.
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(mode):
        raise SimlibError(f"{name}: not a regular file (a FIFO, socket or device), not an image")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
        a = np.clip(a / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _array_to_rgb(a: np.ndarray, max_pixels: int = MAX_PIXELS) -> Image.Image:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or a.size == 0:
        raise SimlibError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), not {a.shape}")
    if a.dtype.kind not in "biuf":
        raise SimlibError(f"an image array must hold numbers (bool, int or float), not {a.dtype}")
    if a.shape[0] * a.shape[1] > max_pixels:
        raise SimlibError(f"a {a.shape[1]}x{a.shape[0]} image array is over the {max_pixels:,}-pixel limit")
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise SimlibError("the image array holds NaN or infinite values")
        if a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(a, 0, 255).astype(np.uint8)
    mode = "L" if a.ndim == 2 else ("RGB" if a.shape[-1] == 3 else "RGBA")
    return _to_rgb(Image.fromarray(a, mode))


def resize_image(img: Image.Image, size: int, mode: str = "pad") -> np.ndarray:
    """Aspect-preserving square resize to a uint8 (size, size, 3) array.

    Args:
        img: an RGB image.
        size: output side in pixels.
        mode: "pad" fits the whole image and pads with white (catalogue photos have white
            backgrounds); "crop" fills the square and centre-crops the overflow.
    """
    if size < 1:
        raise SimlibError(f"image size must be at least 1 pixel, not {size}")
    if img.mode != "RGB":
        img = _to_rgb(img)
    if mode == "pad":
        w, h = img.size
        if round(min(w, h) / max(w, h) * size) == 0:
            # A sliver (e.g. 10000x1) whose short side rounds to 0 px, which ImageOps.pad cannot resize to.
            img = img.resize((size, 1) if w > h else (1, size), Image.Resampling.BILINEAR)
        out = ImageOps.pad(img, (size, size), method=Image.Resampling.BILINEAR, color=(255, 255, 255))
    elif mode == "crop":
        out = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
    else:
        raise SimlibError(f"resize must be 'pad' or 'crop', not {mode!r}")
    return np.asarray(out, dtype=np.uint8)


# Decode at least this many times the model's side before the final (antialiased) resize.
REDUCE_MARGIN = 2


def prepare_image(source: Any, size: int, mode: str = "pad", name: str | None = None) -> np.ndarray:
    """Decode any supported image and resize it: the single preprocessing path for indexing and queries.

    Large images are decoded at a reduced size (at least ``REDUCE_MARGIN`` x ``size`` on the short
    side) before the resize, so a camera photo costs a fraction of its full decode.
    """
    return resize_image(open_image(source, reduce_to=REDUCE_MARGIN * size, name=name), size, mode)
