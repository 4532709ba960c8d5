"""Crash-safe writes: JSON files and whole folders are replaced by rename, never edited in place."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simlib.errors import SimlibError


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


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder that replaces ``target`` only if the block succeeds.

    The old ``target`` is renamed aside, the new one renamed in, then the old one deleted:
    a crash at any point leaves either the old or the new folder complete (a crash between
    the two renames leaves the old one beside it, and :func:`recover_dir` puts it back).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(target: str | os.PathLike) -> None:
    """Restore ``target`` from its set-aside copy if a save died between its two renames."""
    target = Path(target)
    old = target.with_name(f".{target.name}.old")
    if old.is_dir() and not target.exists():
        old.rename(target)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(Path(dirpath) / name, "rb") as f:
                os.fsync(f.fileno())
