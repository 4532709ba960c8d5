"""What simlib keeps beside an index of a photo folder: the file table it syncs against, and the
chunks of an indexing run in progress.

Both live in the index's work folder, a sibling of the index folder (``artifacts/index`` ->
``artifacts/index.work``), because the index folder itself is replaced whole on every save:

- ``files.jsonl``: one line per file of the folder as last indexed: resolved path, size,
  modification time, content hash, and the gallery id it became (or why it was skipped). Written
  whole to a temporary name and renamed, after the index is saved.
- ``run-<key>/chunk-<n>.npz``: the embeddings of an indexing run, one chunk per file, each written
  to a temporary name and renamed when complete. ``key`` hashes the model and the folder's file
  list, so a restarted run over the same folder and model finds its chunks, and a run over a
  changed folder or another model never reuses them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from simlib.errors import SimlibError

STATE_FILE = "files.jsonl"
STATE_FORMAT = "simlib-photos-files"


def work_dir(index_dir: str | os.PathLike) -> Path:
    """The work folder beside ``index_dir`` (``<index>.work``)."""
    index_dir = Path(index_dir).expanduser().absolute()
    return index_dir.with_name(index_dir.name + ".work")


@dataclasses.dataclass(frozen=True)
class FileState:
    """One file of the folder as last indexed.

    Attributes:
        path: resolved path (the index record's path).
        size: bytes when indexed.
        mtime_ns: modification time when indexed.
        digest: content hash (:func:`simlib.data.pipeline.file_digest`), or None when not known.
        id: the gallery id, or None when the file was skipped.
        reason: why it was skipped (None when indexed).
    """

    path: str
    size: int
    mtime_ns: int
    digest: str | None = None
    id: int | None = None
    reason: str | None = None

    @property
    def stamp(self) -> tuple[int, int]:
        return (self.size, self.mtime_ns)


@dataclasses.dataclass(frozen=True)
class FolderState:
    """The folder an index was built from, file by file (``files.jsonl``)."""

    root: str
    files: dict[str, FileState]  # path -> state

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/files.jsonl`` atomically (temporary name, fsync, rename)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / STATE_FILE
        tmp = folder / f".{STATE_FILE}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"format": STATE_FORMAT, "version": 1, "root": self.root}) + "\n")
            for s in sorted(self.files.values(), key=lambda s: s.path):
                f.write(json.dumps(dataclasses.asdict(s)) + "\n")  # ASCII: names that are not UTF-8 survive
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> FolderState | None:
        """Read ``folder/files.jsonl``; None when there is none (an index not built by a folder sync)."""
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            return None
        try:
            with open(path, encoding="utf-8") as f:
                head = json.loads(f.readline())
                if head.get("format") != STATE_FORMAT:
                    raise ValueError("not a simlib file table")
                files = {}
                for line in f:
                    if line.strip():
                        s = FileState(**json.loads(line))
                        files[s.path] = s
        except (OSError, ValueError, TypeError) as e:
            raise SimlibError(f"{path} is damaged ({e}): delete it and run `simlib sync` again") from None
        return cls(root=str(head.get("root", "")), files=files)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """The embeddings of one run of consecutive table rows.

    Attributes:
        rows: every row of the chunk (int64), embedded or not.
        ok: which rows decoded.
        vectors: float32 (ok.sum(), d): the decoded rows' unit vectors, in row order.
        digests: content hash of each row's file ("" where it could not be read).
        reasons: row -> why it was skipped.
    """

    rows: np.ndarray
    ok: np.ndarray
    vectors: np.ndarray
    digests: tuple[str, ...]
    reasons: dict[int, str]


class ChunkStore:
    """The chunks of one indexing run: ``work/run-<key>/chunk-<n>.npz``, each complete or absent."""

    def __init__(self, work: str | os.PathLike, key: str) -> None:
        self.work = Path(work)
        self.folder = self.work / f"run-{key}"

    def open(self) -> ChunkStore:
        """Create the run folder; remove other runs' folders (another model or a changed folder) and
        half-written chunks of this one."""
        self.work.mkdir(parents=True, exist_ok=True)
        for other in self.work.glob("run-*"):
            if other != self.folder and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
        self.folder.mkdir(exist_ok=True)
        for tmp in self.folder.glob(".*.tmp*"):
            tmp.unlink(missing_ok=True)
        return self

    def path(self, n: int) -> Path:
        return self.folder / f"chunk-{n:06d}.npz"

    def done(self) -> set[int]:
        """Numbers of the chunks already written."""
        return {int(p.stem.split("-")[1]) for p in self.folder.glob("chunk-*.npz")}

    def write(self, n: int, chunk: Chunk) -> None:
        """Write chunk ``n`` atomically: a kill leaves it whole or absent, never half."""
        tmp = self.folder / f".chunk-{n:06d}.{os.getpid()}.tmp.npz"
        with open(tmp, "wb") as f:
            np.savez(
                f,
                rows=chunk.rows.astype(np.int64),
                ok=chunk.ok.astype(bool),
                vectors=chunk.vectors.astype(np.float32),
                digests=np.asarray(chunk.digests, dtype=str),
                reasons=np.asarray(json.dumps({str(k): v for k, v in chunk.reasons.items()})),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(n))

    def read(self, n: int) -> Chunk:
        with np.load(self.path(n), allow_pickle=False) as z:
            reasons = {int(k): v for k, v in json.loads(str(z["reasons"])).items()}
            return Chunk(z["rows"], z["ok"], z["vectors"], tuple(str(d) for d in z["digests"]), reasons)

    def read_all(self, numbers: Iterable[int]) -> list[Chunk]:
        return [self.read(n) for n in numbers]

    def remove(self) -> None:
        """Delete this run's chunks (after the index is saved)."""
        shutil.rmtree(self.folder, ignore_errors=True)
