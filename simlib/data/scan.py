"""A real photo folder walked once: every image file found, every other entry skipped with a reason.

:func:`scan_folder` walks nested folders, follows symlinked folders and files without looping (a
folder already visited, by device and inode, is skipped), and lists what it leaves out: hidden
entries, files that are not named as images, unreadable files, broken links, FIFOs and devices,
and second links to a file already found. Each image is one :class:`FileEntry` (its resolved path,
which is what an index records, its size and modification time), in a stable order (sorted by
the path under the root), so two scans of an unchanged folder give the same list.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

from simlib.data.decode import HEIF_EXTENSIONS
from simlib.data.sources import IMAGE_EXTENSIONS
from simlib.errors import SimlibError

SCAN_EXTENSIONS = tuple(sorted(set(IMAGE_EXTENSIONS) | set(HEIF_EXTENSIONS)))


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One image file found by a scan.

    Attributes:
        path: the resolved path (symlinks followed): the key an index records.
        rel: the path under the scanned root as found (through links), for messages and labels.
        size: bytes.
        mtime_ns: modification time in nanoseconds.
    """

    path: str
    rel: str
    size: int
    mtime_ns: int

    @property
    def stamp(self) -> tuple[int, int]:
        """``(size, mtime_ns)``: what a sync compares before hashing."""
        return (self.size, self.mtime_ns)


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """What :func:`scan_folder` found.

    Attributes:
        root: the scanned folder, resolved.
        files: the images, sorted by ``rel``.
        skipped: path (as found) -> why it was left out, sorted by path.
    """

    root: str
    files: tuple[FileEntry, ...]
    skipped: dict[str, str]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def labelled(self) -> bool:
        """Whether every image sits in a first-level sub-folder (whose name is then its label)."""
        return bool(self.files) and all(len(Path(f.rel).parts) >= 2 for f in self.files)

    def labels(self) -> list[str] | None:
        """The first-level sub-folder of each image when :attr:`labelled`, else None."""
        return [Path(f.rel).parts[0] for f in self.files] if self.labelled else None

    def table(self, first_id: int = 0):
        """The images as an :class:`~simlib.data.ImageTable` (ids ``first_id``, ``first_id + 1``, ... in scan order)."""
        import numpy as np

        from simlib.data.table import ImageTable

        labels = self.labels()
        return ImageTable(
            ids=np.arange(first_id, first_id + len(self.files), dtype=np.int64),
            paths=tuple(f.path for f in self.files),
            labels=None if labels is None else np.asarray(labels, dtype=object),
            name=f"image folder {self.root}" + (" (labels from sub-folders)" if labels else " (no labels)"),
        )


def scan_folder(root: str | os.PathLike, *, hidden: bool = False, exclude: tuple[str, ...] = ()) -> FolderScan:
    """Walk ``root`` for image files.

    Args:
        root: the folder.
        hidden: also enter hidden folders and read hidden files (names starting with ".").
        exclude: resolved folders never entered (e.g. an index folder kept inside the photos).

    Returns a :class:`FolderScan`.

    Raises:
        SimlibError: ``root`` is not a readable folder.
    """
    top = Path(root).expanduser()
    if not top.is_dir():
        raise SimlibError(f"{top} is not a folder: point --data at a folder of images")
    top_real = top.resolve()
    excluded = {str(Path(e).resolve()) for e in exclude}
    files: dict[str, FileEntry] = {}  # resolved path -> entry (the first link found wins)
    skipped: dict[str, str] = {}
    seen_dirs: dict[tuple[int, int], str] = {}

    def walk(folder: Path, rel: Path) -> None:
        try:
            st = folder.stat()
        except OSError as e:
            skipped[str(folder)] = f"folder cannot be read ({e.strerror or type(e).__name__})"
            return
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            skipped[str(folder)] = f"symlink loop or second link to a folder already scanned ({seen_dirs[key]})"
            return
        seen_dirs[key] = str(folder)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            skipped[str(folder)] = f"folder cannot be listed ({e.strerror or type(e).__name__})"
            return
        for entry in entries:
            path = Path(entry.path)
            sub = rel / entry.name
            if entry.name.startswith(".") and not hidden:
                skipped[str(path)] = "hidden"
                continue
            try:
                st = path.stat()  # follows links
            except FileNotFoundError:
                skipped[str(path)] = "broken symlink (its target does not exist)"
                continue
            except OSError as e:  # ELOOP: a link pointing at itself
                skipped[str(path)] = f"cannot be read ({e.strerror or type(e).__name__})"
                continue
            if stat.S_ISDIR(st.st_mode):
                if str(path.resolve()) in excluded:
                    skipped[str(path)] = "excluded folder (simlib's own files)"
                    continue
                walk(path, sub)
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped[str(path)] = "not a regular file (a FIFO, socket or device)"
                continue
            if path.suffix.lower() not in SCAN_EXTENSIONS:
                skipped[str(path)] = f"not an image file name ({path.suffix or 'no extension'})"
                continue
            if st.st_size == 0:
                skipped[str(path)] = "empty file"
                continue
            if not os.access(path, os.R_OK):
                skipped[str(path)] = "permission denied"
                continue
            real = str(path.resolve())
            if real in files:
                skipped[str(path)] = f"another link to {files[real].rel}, already listed"
                continue
            files[real] = FileEntry(path=real, rel=sub.as_posix(), size=st.st_size, mtime_ns=st.st_mtime_ns)

    walk(top_real if top.is_symlink() else top, Path())
    ordered = tuple(sorted(files.values(), key=lambda f: f.rel))
    return FolderScan(root=str(top_real), files=ordered, skipped=dict(sorted(skipped.items())))


# Entries that are not photos at all (hidden, other file types, second links, loops): a report lists them
# apart from the images that could not be read.
IGNORED_REASONS = ("hidden", "not an image file name", "symlink loop", "another link", "excluded folder")


def ignorable(reason: str) -> bool:
    """Whether a scan's skip ``reason`` concerns an entry that is not meant as a photo (see :data:`IGNORED_REASONS`)."""
    return reason.startswith(IGNORED_REASONS)
