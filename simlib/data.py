"""Datasets as one table type, image decoding, splits and the tf.data input pipeline.

Every loader returns an :class:`ImageTable`: one row per image with an id, a file path
or an in-memory array, an optional label and a dict of string attributes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import stat
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from simlib.errors import SimlibError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Refuse images whose header declares more pixels than this before decoding them:
# a decompression bomb (a tiny PNG declaring 30000x30000) must never reach memory.
MAX_PIXELS = 40_000_000
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
PRODUCT_SET_DIR = "fashion-product-images-small"
FASHION_MNIST_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)


# ----------------------------------------------------------------------------- table
@dataclasses.dataclass(frozen=True)
class ImageTable:
    """A dataset: one row per image.

    Attributes:
        ids: int64 ids, unique within the table (product id, file order or array index).
        paths: file path of each image, or None when images live in ``arrays``.
        arrays: uint8 images (N, H, W) or (N, H, W, C), or None when images are files.
        labels: object array of class names, or None for a label-free dataset.
        attributes: per-row dict of extra string columns (colour, gender, ...).
        name: short description of where the data came from.
    """

    ids: np.ndarray
    paths: tuple[str, ...] | None = None
    arrays: np.ndarray | None = None
    labels: np.ndarray | None = None
    attributes: tuple[dict[str, str], ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        n = len(self.ids)
        if (self.paths is None) == (self.arrays is None):
            raise ValueError("an ImageTable holds either paths or arrays")
        sizes = [len(x) for x in (self.paths, self.arrays, self.labels) if x is not None]
        if self.attributes:
            sizes.append(len(self.attributes))
        if any(s != n for s in sizes):
            raise ValueError("every column of an ImageTable must have one entry per row")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_labels(self) -> bool:
        """True when every row has a class label."""
        return self.labels is not None

    def source(self, i: int) -> str | np.ndarray:
        """The path or array of row ``i``."""
        return self.paths[i] if self.paths is not None else self.arrays[i]  # type: ignore[index]

    def attrs(self, i: int) -> dict[str, str]:
        """The attributes of row ``i`` (empty dict when there are none)."""
        return self.attributes[i] if self.attributes else {}

    def label(self, i: int) -> str | None:
        """The label of row ``i``, or None."""
        return None if self.labels is None else str(self.labels[i])

    def subset(self, rows: Sequence[int] | np.ndarray) -> ImageTable:
        """A new table with the given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return ImageTable(
            ids=self.ids[rows],
            paths=None if self.paths is None else tuple(self.paths[i] for i in rows),
            arrays=None if self.arrays is None else self.arrays[rows],
            labels=None if self.labels is None else self.labels[rows],
            attributes=tuple(self.attributes[i] for i in rows) if self.attributes else (),
            name=self.name,
        )


# ----------------------------------------------------------------------------- locating data
def find_data_root() -> Path | None:
    """The first existing data root among ``$SIMLIB_DATA``, ``./data`` and ``../shared/data``.

    The last two are also tried beside this checkout of simlib, wherever the current folder is.
    """
    candidates = []
    if os.environ.get("SIMLIB_DATA"):
        candidates.append(Path(os.environ["SIMLIB_DATA"]).expanduser())
    repo = Path(__file__).resolve().parents[1]  # so notebooks (run from notebooks/) find it too
    candidates += [Path("data"), Path("..") / "shared" / "data", repo / "data", repo.parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


def default_data_spec() -> str:
    """The dataset used when the user names none: the product set if found, else Fashion-MNIST."""
    root = find_data_root()
    if root is not None:
        if (root / "styles.csv").is_file():
            return str(root)
        if (root / PRODUCT_SET_DIR / "styles.csv").is_file():
            return str(root / PRODUCT_SET_DIR)
    return "fashion-mnist"


def cache_dir() -> Path:
    """Where simlib writes caches (``$SIMLIB_CACHE``, default ``~/.cache/simlib``)."""
    path = Path(os.environ.get("SIMLIB_CACHE", "~/.cache/simlib")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------- loaders
def load_dataset(spec: str | os.PathLike, label_column: str = "articleType") -> ImageTable:
    """Load a dataset by name or folder, detecting its layout.

    Args:
        spec: ``"fashion-mnist"`` (``"fashion-mnist:train"`` for the training half), or a folder:
            ``styles.csv`` + ``images/`` (product layout), class sub-folders, or a flat folder.
        label_column: product layout only: the ``styles.csv`` column used as the label.

    Returns:
        The dataset as an :class:`ImageTable`.
    """
    spec = str(spec)
    if spec.startswith("fashion-mnist"):
        split = spec.split(":", 1)[1] if ":" in spec else "test"
        return load_fashion_mnist(split)
    root = Path(spec).expanduser()
    if not root.exists():
        raise SimlibError(f"data folder {root} does not exist: pass an existing folder with --data")
    if not root.is_dir():
        raise SimlibError(f"{root} is a file: --data takes a folder of images")
    if (root / "styles.csv").is_file():
        return load_product_set(root, label_column=label_column)
    if (root / PRODUCT_SET_DIR / "styles.csv").is_file():
        return load_product_set(root / PRODUCT_SET_DIR, label_column=label_column)
    return load_image_folder(root)


def load_product_set(root: str | os.PathLike, label_column: str = "articleType") -> ImageTable:
    """Load the Kaggle "Fashion Product Images (Small)" layout: ``images/<id>.jpg`` + ``styles.csv``.

    Rows whose image file is missing are dropped. Columns other than ``id`` and the label
    are kept as attributes.
    """
    root = Path(root)
    csv_path = root / "styles.csv"
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = list(reader)
    except (OSError, StopIteration, UnicodeDecodeError) as e:
        raise SimlibError(f"cannot read {csv_path}: {e}") from None
    if "id" not in header:
        raise SimlibError(f"{csv_path} has no 'id' column: is this the Kaggle product layout?")
    if label_column not in header:
        raise SimlibError(f"{csv_path} has no column {label_column!r}; columns are: {', '.join(header)}")
    ids, paths, labels, attributes = [], [], [], []
    for row in rows:
        if not row:
            continue
        if len(row) > len(header):  # Kaggle's file has unquoted commas in the last column
            row = [*row[: len(header) - 1], ",".join(row[len(header) - 1 :])]
        record = dict(zip(header, row, strict=False))
        image = root / "images" / f"{record['id']}.jpg"
        if not record.get("id", "").isdigit() or not image.is_file():
            continue
        ids.append(int(record["id"]))
        paths.append(str(image))
        labels.append(record.get(label_column, ""))
        attributes.append({k: v for k, v in record.items() if k not in ("id", label_column)})
    if not ids:
        raise SimlibError(f"no images listed in {csv_path} were found under {root / 'images'}")
    order = np.argsort(ids, kind="stable")
    table = ImageTable(
        ids=np.asarray(ids, dtype=np.int64),
        paths=tuple(paths),
        labels=np.asarray(labels, dtype=object),
        attributes=tuple(attributes),
        name=f"product set {root} (label: {label_column})",
    )
    return table.subset(order)


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every entry named like an image under ``root`` (recursive, sorted; symlinked folders not followed).

    Entries that are not regular files (dangling or looping symlinks, FIFOs) are kept so that
    indexing lists them as skipped with a reason instead of dropping them silently.
    """
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                found.append(path)
    return found


def load_image_folder(root: str | os.PathLike) -> ImageTable:
    """Load any folder of images: first-level sub-folders give labels, a flat folder gives none."""
    root = Path(root)
    paths = list_images(root)
    if not paths:
        raise SimlibError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}: point --data at a folder of images"
        )
    rel = [p.relative_to(root) for p in paths]
    labelled = all(len(r.parts) >= 2 for r in rel)
    labels = np.asarray([r.parts[0] for r in rel], dtype=object) if labelled else None
    return ImageTable(
        ids=np.arange(len(paths), dtype=np.int64),
        paths=tuple(str(p) for p in paths),
        labels=labels,
        name=f"image folder {root}" + (" (labels from sub-folders)" if labelled else " (no labels)"),
    )


def load_fashion_mnist(split: str = "test") -> ImageTable:
    """Load Fashion-MNIST through ``keras.datasets.fashion_mnist.load_data()``.

    Keras downloads the data once into ``$KERAS_HOME/datasets``. Offline, the four idx files in
    ``<data root>/fashion-mnist`` (see :func:`find_data_root`) are linked into that cache first.

    Args:
        split: "train" (60,000), "test" (10,000) or "all".
    """
    if split not in ("train", "test", "all"):
        raise SimlibError(f"Fashion-MNIST split must be train, test or all, not {split!r}")
    _link_local_fashion_mnist()
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as e:  # Keras raises a bare Exception on URL failures
        raise SimlibError(
            "cannot download Fashion-MNIST (no network?): put the four idx .gz files in "
            "$SIMLIB_DATA/fashion-mnist or ~/.keras/datasets/fashion-mnist"
            f" ({type(e).__name__}: {str(e)[:120]})"
        ) from None
    parts = {"train": [(x_train, y_train, 0)], "test": [(x_test, y_test, 0)]}
    parts["all"] = [(x_train, y_train, 0), (x_test, y_test, len(x_train))]
    xs, ys, ids = [], [], []
    for x, y, offset in parts[split]:
        xs.append(x)
        ys.append(y)
        ids.append(np.arange(len(x), dtype=np.int64) + offset)
    y = np.concatenate(ys)
    return ImageTable(
        ids=np.concatenate(ids),
        arrays=np.concatenate(xs),
        labels=np.asarray([FASHION_MNIST_CLASSES[i] for i in y], dtype=object),
        name=f"Fashion-MNIST ({split})",
    )


def _link_local_fashion_mnist() -> None:
    root = find_data_root()
    if root is None or not (root / "fashion-mnist").is_dir():
        return
    from keras.src.backend.config import keras_home  # where keras.utils.get_file caches

    target = Path(keras_home()).expanduser() / "datasets" / "fashion-mnist"
    for name in FASHION_MNIST_FILES:
        src = root / "fashion-mnist" / name
        if src.is_file() and not (target / name).exists():
            target.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another process linked it a moment ago
                (target / name).symlink_to(src.resolve())


def materialize(table: ImageTable, out_dir: str | os.PathLike) -> ImageTable:
    """Write an in-memory table as PNG files (``out_dir/<label>/<id>.png``) and return it path-based.

    Used to serve Fashion-MNIST through the same file-based index and app as any folder.
    Files already written are reused.
    """
    if table.paths is not None:
        return table
    out = Path(out_dir)
    paths = []
    for i in range(len(table)):
        label = table.label(i) or "unlabelled"
        folder = out / label.replace("/", "-").replace(" ", "_")
        path = folder / f"{int(table.ids[i])}.png"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            # Written under a temporary name, then renamed: another process reading the same cache
            # (two kernels, parallel tests) never sees half a PNG.
            tmp = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
            Image.fromarray(np.asarray(table.arrays[i])).save(tmp, format="PNG")  # type: ignore[index]
            os.replace(tmp, path)
        paths.append(str(path))
    return dataclasses.replace(table, paths=tuple(paths), arrays=None)


# ----------------------------------------------------------------------------- splits
def split_table(
    table: ImageTable,
    *,
    seed: int = 0,
    val: float = 0.1,
    test: float = 0.3,
    by: str = "image",
) -> dict[str, ImageTable]:
    """Deterministic train/val/test split.

    Args:
        table: the dataset.
        seed: the split depends only on this seed and the table's ids and labels.
        val: fraction for validation.
        test: fraction for test.
        by: "image" (stratified by class: every class in every split) or "class"
            (class-disjoint: test classes are never seen in training, the metric-learning protocol).

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise SimlibError(f"split fractions val={val} test={test} must be in [0, 1) and sum below 1")
    if by not in ("image", "class"):
        raise SimlibError(f"split by must be 'image' or 'class', not {by!r}")
    rng = np.random.default_rng(seed)
    labels = table.labels if table.labels is not None else np.zeros(len(table), dtype=object)
    classes = sorted(set(labels.tolist()))
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    if by == "class":
        if table.labels is None:
            raise SimlibError("a class-disjoint split needs labels; this dataset has none")
        order = rng.permutation(len(classes))
        n_test = max(1, round(len(classes) * test)) if test > 0 else 0
        n_val = max(1, round(len(classes) * val)) if val > 0 else 0
        assignment = {}
        for rank, c in enumerate(order):
            name = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            assignment[classes[c]] = name
        for i, lab in enumerate(labels):
            parts[assignment[lab]].append(i)
    else:
        for c in classes:
            rows = np.flatnonzero(labels == c)
            rows = rows[np.argsort(table.ids[rows], kind="stable")]
            rows = rows[rng.permutation(len(rows))]
            n_test = round(len(rows) * test)
            n_val = round(len(rows) * val)
            parts["test"] += rows[:n_test].tolist()
            parts["val"] += rows[n_test : n_test + n_val].tolist()
            parts["train"] += rows[n_test + n_val :].tolist()
    return {name: table.subset(sorted(rows)) for name, rows in parts.items()}


def sample_per_class(table: ImageTable, n_classes: int, per_class: int, seed: int = 0) -> ImageTable:
    """A small labelled subset: ``per_class`` random images of each of the ``n_classes`` largest classes.

    Used for quick runs (smoke tests, first steps in the course); rows keep the table's order.
    """
    if table.labels is None:
        rng = np.random.default_rng(seed)
        return table.subset(np.sort(rng.choice(len(table), min(len(table), n_classes * per_class), replace=False)))
    values, counts = np.unique(table.labels.astype(str), return_counts=True)
    chosen = values[np.argsort(-counts, kind="stable")[:n_classes]]
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    for c in sorted(chosen):
        idx = np.flatnonzero(table.labels.astype(str) == c)
        rows += rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist()
    return table.subset(np.sort(np.asarray(rows, dtype=np.int64)))


# ----------------------------------------------------------------------------- decoding
def open_image(source: Any, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open any supported image as an upright 8-bit RGB PIL image.

    Accepts a path, bytes, a PIL image or a numpy array (H, W), (H, W, 1|3|4), uint8 or
    float. Handles every Pillow mode (L, LA, P, RGBA, CMYK, I;16, F), EXIF orientation and
    transparency (composited on white), and takes the first frame of animations.

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
        name = str(source) if is_path else "uploaded image" if is_bytes else str(getattr(source, "name", "image"))
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
        img.load()
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


def prepare_image(source: Any, size: int, mode: str = "pad") -> np.ndarray:
    """Decode any supported image and resize it: the single preprocessing path for indexing and queries."""
    return resize_image(open_image(source), size, mode)


# ----------------------------------------------------------------------------- tf.data
class DecodeErrors:
    """Thread-safe record of rows that failed to decode in a pipeline: row -> reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reasons: dict[int, str] = {}

    def add(self, row: int, reason: str) -> None:
        """Record that ``row`` failed for ``reason``."""
        with self._lock:
            self.reasons[row] = reason


def image_pipeline(
    table: ImageTable,
    size: int,
    mode: str = "pad",
    batch_size: int = 32,
    errors: DecodeErrors | None = None,
    rows: Iterable[int] | None = None,
):
    """A ``tf.data.Dataset`` of ``(images uint8 [B,S,S,3], rows int64 [B], ok bool [B])``.

    Images are decoded with Pillow one batch per call, in order, in the background while the
    consumer works on the previous batch. A row that fails to decode yields a white image with
    ``ok=False`` and its reason in ``errors``.
    """
    import tensorflow as tf

    errors = errors if errors is not None else DecodeErrors()
    row_array = np.arange(len(table), dtype=np.int64) if rows is None else np.asarray(list(rows), np.int64)

    def load(batch_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.full((len(batch_rows), size, size, 3), 255, np.uint8)
        ok = np.zeros(len(batch_rows), bool)
        for j, row in enumerate(batch_rows):
            r = int(row)
            try:
                images[j] = prepare_image(table.source(r), size, mode)
                ok[j] = True
            except SimlibError as e:
                errors.add(r, str(e))
            except Exception as e:  # never let one bad file stop a whole gallery
                errors.add(r, f"{type(e).__name__}: {e}")
        return images, ok

    @tf.autograph.experimental.do_not_convert  # plain TF calls: nothing for AutoGraph to convert
    def tf_load(batch_rows):
        images, ok = tf.numpy_function(load, [batch_rows], [tf.uint8, tf.bool], stateful=False)
        images.set_shape((None, size, size, 3))
        ok.set_shape((None,))
        return images, batch_rows, ok

    # Decoding costs 5-12 % of a ResNet50 forward (benchmarks/bench_embed.py), so one worker per
    # 8 cores keeps up with the model. More take cores from the model's own intra-op threads: on
    # 2 cores AUTOTUNE's per-image calls ran two decode threads and an autotuner beside them.
    workers = max(1, (os.cpu_count() or 1) // 8)
    options = tf.data.Options()
    options.threading.private_threadpool_size = workers
    options.autotune.enabled = False
    ds = tf.data.Dataset.from_tensor_slices(row_array).batch(batch_size)
    ds = ds.map(tf_load, num_parallel_calls=workers, deterministic=True)
    return ds.prefetch(workers + 1).with_options(options)


def load_images(table: ImageTable, size: int, resize: str = "pad", progress: bool | str = False) -> np.ndarray:
    """Decode every row of ``table`` into one uint8 (N, S, S, 3) array (parallel, in order).

    Raises:
        SimlibError: an image cannot be read (training data should be clean; ``simlib index``
            reports bad files by name).
    """
    from tqdm.auto import tqdm

    errors = DecodeErrors()
    out = np.empty((len(table), size, size, 3), np.uint8)
    desc = progress if isinstance(progress, str) else "decoding"
    with tqdm(total=len(table), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for images, rows, _ in image_pipeline(table, size, resize, 64, errors).as_numpy_iterator():
            out[rows] = images
            bar.update(len(rows))
    if errors.reasons:
        row, reason = next(iter(sorted(errors.reasons.items())))
        raise SimlibError(
            f"{len(errors.reasons)} training image(s) cannot be read, e.g. {table.source(row)}: {reason}; "
            "remove them from the training folder"
        )
    return out
