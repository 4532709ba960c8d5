"""Where images come from: the data root, the layouts simlib reads (product set, class folders, a flat
folder, Fashion-MNIST) and the PNG cache for in-memory sets."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from simlib.data.table import ImageTable
from simlib.errors import SimlibError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


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


def find_data_root() -> Path | None:
    """The first existing data root among ``$SIMLIB_DATA``, ``./data`` and ``../shared/data``.

    The last two are also tried beside this checkout of simlib, wherever the current folder is.
    """
    candidates = []
    if os.environ.get("SIMLIB_DATA"):
        candidates.append(Path(os.environ["SIMLIB_DATA"]).expanduser())
    repo = Path(__file__).resolve().parents[2]  # so notebooks (run from notebooks/) find it too
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


def collect_images(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], dict[str, str]]:
    """The image files named by ``paths`` (folders searched recursively, :func:`list_images`), and path ->
    reason for what names none (a missing file, a folder without images)."""
    files: list[Path] = []
    skipped: dict[str, str] = {}
    for p in map(Path, paths):
        if p.is_dir():
            found = list_images(p)
            files += found
            if not found:
                skipped[str(p)] = "folder holds no images"
        elif p.exists():
            files.append(p)
        else:
            skipped[str(p)] = "no such file"
    return files, skipped
