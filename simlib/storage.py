"""Crash-safe writes: JSON files, whole folders and content-named images are replaced by rename, never edited
in place."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from simlib.data import open_image
from simlib.errors import SimlibError

TMP_INFIX = ".tmp-"
_HELD = threading.local()  # folders whose lock this thread holds


def save_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by simlib, with a clear error when it is missing or broken."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SimlibError(f"{path} is missing: was this folder written by simlib?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SimlibError(f"{path} is not valid JSON ({e}); the folder is damaged, rebuild it") from None


def store_png(image: Any, folder: str | os.PathLike) -> Path:
    """Store an image once in ``folder`` as PNG, named by the SHA-256 of its pixels; returns its resolved path.

    The one content-addressed image store (the app's added images, the feedback's query images).
    Decoding with :func:`simlib.data.open_image` and re-encoding drops the file's metadata (a
    phone photo's GPS position among it); the content name makes a second copy of the same
    picture the same file. The PNG is written beside its name and renamed in, so a reader (or an
    index naming it) never sees a half-written image, and concurrent writers of the same picture
    agree.

    Args:
        image: a path, bytes, PIL image or array (anything :func:`simlib.data.open_image` reads).
        folder: where to store it (created).

    Raises:
        SimlibError: the image cannot be read.
    """
    rgb = np.asarray(open_image(image), np.uint8)
    digest = hashlib.sha256(f"{rgb.shape}".encode() + rgb.tobytes()).hexdigest()[:32]
    folder = Path(folder)
    target = folder / f"{digest}.png"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp"
        Image.fromarray(rgb).save(tmp, "PNG")
        os.replace(tmp, target)
    return target.resolve()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder that replaces ``target`` only if the block succeeds.

    The new folder is written and fsynced beside ``target``; then the old ``target`` is renamed
    aside (``.NAME.old``), the new one renamed in, the parent folder fsynced and the old one
    deleted. A crash (even ``kill -9`` or a power cut) at any point leaves the old or the new
    folder complete; :func:`recover_dir` puts the old one back if the crash fell between the two
    renames and deletes leftovers. Saves of folders in the same parent are serialised by a lock
    on the parent, so leftovers found under the lock are known to be stale.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent):
        _recover(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_INFIX}", dir=target.parent))
        try:
            yield tmp
            _fsync_tree(tmp)
            _pause_point("written")
            old = _old_path(target)
            if target.exists():
                target.rename(old)
                _fsync_dir(target.parent)
                _pause_point("aside")
            tmp.rename(target)
            _fsync_dir(target.parent)
            _pause_point("swapped")
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(target: str | os.PathLike) -> None:
    """Repair what a save that died part-way left behind ``target``.

    Puts ``.NAME.old`` back when ``target`` is missing (the crash fell between the two renames),
    deletes it when ``target`` is complete, and deletes stale ``.NAME.tmp-*`` folders. Does
    nothing, and takes no lock, when there is nothing to repair (so read-only folders load).
    """
    target = Path(target)
    if not _leftovers(target):
        return
    try:
        with _locked(target.parent):
            _recover(target)
    except OSError as e:
        if not target.exists():
            raise SimlibError(
                f"{target} is missing and its previous version {_old_path(target)} cannot be restored ({e}): "
                "rename it back by hand"
            ) from None


def _old_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _leftovers(target: Path) -> list[Path]:
    if not target.parent.is_dir():
        return []
    found = list(target.parent.glob(f".{glob.escape(target.name)}{TMP_INFIX}*"))
    old = _old_path(target)
    return [*found, old] if old.exists() else found


def _recover(target: Path) -> None:
    """:func:`recover_dir`'s work; the caller holds the parent's lock."""
    old = _old_path(target)
    if old.is_dir() and not target.exists():
        old.rename(target)
        _fsync_dir(target.parent)
    for stale in _leftovers(target):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (POSIX ``flock``; no-op where there is none).

    Re-entrant within a thread (a save nested in a save of the same parent must not wait for
    itself); other threads and processes wait.
    """
    try:
        import fcntl  # lazy: POSIX only
    except ImportError:  # Windows: saves are not serialised
        yield
        return
    key = os.path.realpath(folder)
    held = _HELD.__dict__.setdefault("folders", set())
    if key in held:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.add(key)
        yield
    finally:
        held.discard(key)
        os.close(fd)  # closing releases the lock


def _fsync_dir(folder: Path) -> None:
    """Make renames and new entries in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(Path(dirpath) / name, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _pause_point(stage: str) -> None:
    # Test hook for the crash-safety tests: with SIMLIB_TEST_PAUSE_AT=<stage>, announce the stage on
    # stderr and wait there, so that a test can kill -9 the process at exactly that point of a save.
    if os.environ.get("SIMLIB_TEST_PAUSE_AT") == stage:
        sys.stderr.write(f"simlib-test: paused at {stage}\n")
        sys.stderr.flush()
        time.sleep(600)
