"""Keep an index in sync with its photo folder: embed only what changed.

:func:`sync_index` compares the folder (a fresh :func:`~simlib.data.scan.scan_folder`) with the file
table kept beside the index (:class:`~simlib.photos.store.FolderState`):

- same path, same size and modification time: unchanged, nothing read;
- same path, new size or time: the file is hashed; same content (a ``touch``, a copy back) is only
  re-stamped, new content is **changed**: its old entry is removed and the file embedded again;
- a path gone from the folder: **removed** from the index;
- a new path: hashed; when its content is that of a file that disappeared (a move or a rename), the
  stored vector moves with it under a new id (**moved**, nothing embedded); otherwise it is
  **added**: embedded with :meth:`Searcher.add_images`, with new ids;
- a file skipped last time (unreadable) is tried again only when its size or time changed.

The calibrated "good match" threshold is refreshed when the gallery changed enough to move it: more
than :data:`RECALIBRATE_FRACTION` (10 %) of the images added, removed or changed since it was
calibrated, or a label that appeared or disappeared. Ids are never reused.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import numpy as np

from simlib.data.pipeline import file_digest
from simlib.data.scan import FileEntry, scan_folder
from simlib.errors import SimlibError
from simlib.photos.store import FileState, FolderState, work_dir

RECALIBRATE_FRACTION = 0.10
CHANGES_KEY = "photos_changes_since_calibration"  # manifest extra: images changed since the last calibration


@dataclasses.dataclass
class SyncReport:
    """Counts of what :func:`sync_index` found and did.

    Attributes:
        added: new files embedded and added.
        removed: files gone from the folder, removed from the index.
        changed: files whose content changed, embedded again.
        moved: files moved or renamed (same content), kept without embedding.
        touched: files with a new time but the same content (nothing embedded).
        unchanged: files left as they were.
        embedded: images embedded by this sync (added + changed that could be read).
        skipped: path -> reason, for entries of the folder left out (new this sync or still unreadable).
        recalibrated: whether the threshold was refreshed.
        gallery_size: images in the index afterwards.
        seconds: wall time.
    """

    added: int = 0
    removed: int = 0
    changed: int = 0
    moved: int = 0
    touched: int = 0
    unchanged: int = 0
    embedded: int = 0
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    recalibrated: bool = False
    gallery_size: int = 0
    seconds: float = 0.0

    @property
    def unreadable(self) -> int:
        """Skipped entries that were meant as photos (not hidden files, other file types or loops)."""
        from simlib.data.scan import ignorable

        return sum(not ignorable(why) for why in self.skipped.values())

    @property
    def changed_anything(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.moved)

    def summary(self) -> str:
        """One line for a terminal."""
        return (
            f"synced: {self.added} added, {self.removed} removed, {self.changed} changed, {self.moved} moved, "
            f"{self.touched} touched, {self.unchanged} unchanged; {self.embedded} embedded, "
            f"{self.unreadable} skipped; the gallery holds {self.gallery_size}"
            + (" (threshold recalibrated)" if self.recalibrated else "")
            + f" in {self.seconds:.1f} s"
        )


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return file_digest(f.read())
    except OSError:
        return None


def sync_searcher(
    searcher,
    index_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    progress: bool | str = False,
    recalibrate: bool | None = None,
    seed: int = 0,
) -> SyncReport:
    """Bring an open ``searcher`` (loaded from ``index_dir``) in line with its folder; save if anything changed.

    Args:
        searcher: a :class:`~simlib.search.Searcher` on ``index_dir`` (changed in place).
        index_dir: its index folder (saved back there) and, beside it, the file table.
        data: the photo folder (default: the one the index was built or last synced from).
        progress: show a progress bar while embedding.
        recalibrate: True: always recalibrate; False: never; None: when the gallery changed enough
            (see the module's doc) and it had been calibrated.
        seed: the calibration seed.
    """
    t0 = time.perf_counter()
    index_dir = Path(index_dir).expanduser().absolute()
    work = work_dir(index_dir)
    labels_before = {r.label for r in searcher.index.records() if r.label is not None}
    state = FolderState.load(work)
    if data is None and (state is None or not state.root):
        raise SimlibError(f"{index_dir} does not record its photo folder: give it with --data DIR")
    root = str(Path(data).expanduser().resolve()) if data is not None else state.root  # type: ignore[union-attr]
    known = _reconciled(searcher, state)
    scan = scan_folder(root, exclude=(str(index_dir), str(work)))
    report = SyncReport(skipped=dict(scan.skipped))
    files, to_remove, to_add, gone = _compare(known, {f.path: f for f in scan.files}, report)
    moves = _moves(files, to_add, known, gone)
    report.removed = sum(1 for s in gone.values() if s.id is not None) - len(moves)
    to_remove += [s.id for s in gone.values() if s.id is not None]
    index = searcher.index
    moved_vectors = index.vectors_of([s.id for _, s in moves]) if moves else None
    if to_remove:
        searcher.remove(to_remove)
    if moves:
        labels = [Path(path).parent.name if s.id in index and index.record(s.id).label else None for path, s in moves]
        ids = searcher.add_vectors(moved_vectors, [path for path, _ in moves], labels)
        for (path, _), new_id in zip(moves, ids, strict=True):
            files[path] = dataclasses.replace(files[path], id=new_id)
        report.moved = len(moves)
    if to_add:
        _embed_added(searcher, to_add, files, known, report, progress)
    report.gallery_size = len(index)
    if report.changed_anything:
        report.recalibrated = _maybe_recalibrate(searcher, report, recalibrate, seed, labels_before)
        searcher.save_updated(index_dir)
    elif recalibrate:
        report.recalibrated = _maybe_recalibrate(searcher, report, True, seed, labels_before)
        searcher.save_updated(index_dir)
    FolderState(root=root, files=files).save(work)
    for leftover in work.glob("run-*"):  # chunks of a run killed after its index was saved
        shutil.rmtree(leftover, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report


def _compare(
    known: dict[str, FileState], now: dict[str, FileEntry], report: SyncReport
) -> tuple[dict[str, FileState], list[int], list[str], dict[str, FileState]]:
    """The folder against what the index knows: ``(files, ids to remove, paths to embed, vanished files)``;
    unchanged and merely touched files are counted in ``report``."""
    files: dict[str, FileState] = {}
    to_remove: list[int] = []
    to_add: list[str] = []
    gone = {p: s for p, s in known.items() if p not in now}
    for path, f in now.items():
        old = known.get(path)
        if old is not None and old.stamp == f.stamp:
            files[path] = old
            if old.id is None:
                report.skipped[path] = old.reason or "could not be read"
            else:
                report.unchanged += 1
            continue
        digest = _digest(path)
        if old is not None and old.digest is not None and digest == old.digest:
            files[path] = dataclasses.replace(old, size=f.size, mtime_ns=f.mtime_ns)
            report.touched += old.id is not None
            if old.id is None:
                report.skipped[path] = old.reason or "could not be read"
            continue
        if old is not None and old.id is not None:
            to_remove.append(old.id)
            report.changed += 1
        files[path] = FileState(path, f.size, f.mtime_ns, digest)
        to_add.append(path)
    return files, to_remove, to_add, gone


def _moves(
    files: dict[str, FileState], to_add: list[str], known: dict[str, FileState], gone: dict[str, FileState]
) -> list[tuple[str, FileState]]:
    """New paths whose content is that of a vanished file (taken out of ``to_add``): their stored vector moves,
    nothing is embedded."""
    vanished = {s.digest: s for s in gone.values() if s.id is not None and s.digest}
    moves: list[tuple[str, FileState]] = []
    for path in list(to_add):
        source = vanished.pop(files[path].digest or "", None) if path not in known else None
        if source is not None:
            moves.append((path, source))
            to_add.remove(path)
    return moves


def _embed_added(searcher, to_add: list[str], files: dict, known: dict, report: SyncReport, progress) -> None:
    """Embed and add the new and changed files; unreadable ones are listed with their reason."""
    added, skipped = searcher.add_images(to_add, progress=progress)
    for path in to_add:
        ids = searcher.ids_of_path(path)
        if ids:
            files[path] = dataclasses.replace(files[path], id=ids[0])
            report.added += path not in known or known[path].id is None  # a changed file counts as changed
        else:
            why = skipped.get(path, "could not be read")
            why = why[len(path) + 2 :] if why.startswith(path + ": ") else why
            files[path] = dataclasses.replace(files[path], reason=why)
            report.skipped[path] = why
    report.embedded = len(added)


def sync_index(
    index_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    progress: bool | str = False,
    recalibrate: bool | None = None,
    seed: int = 0,
) -> SyncReport:
    """Open ``index_dir``, bring it in line with its photo folder (see :func:`sync_searcher`), save it."""
    from simlib.search import Searcher

    searcher = Searcher.load(index_dir)
    try:
        return sync_searcher(searcher, index_dir, data, progress=progress, recalibrate=recalibrate, seed=seed)
    finally:
        searcher.close()


def sync_on_start(searcher, index_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> SyncReport | None:
    """For an app opening ``index_dir``: sync it with its folder when it records one (or ``data`` is given).

    Returns None (and changes nothing) for an index that does not come from a photo folder (a product
    set, Fashion-MNIST, an index without a file table and no ``data``).
    """
    if data is None and FolderState.load(work_dir(index_dir)) is None:
        return None
    return sync_searcher(searcher, index_dir, data)


def _reconciled(searcher, state: FolderState | None) -> dict[str, FileState]:
    """The file table as the index stands: entries whose id left the index dropped, indexed files the
    table does not know (an index saved but killed before its table was, or built by `Searcher.from_table`)
    stamped from the disk as they are now."""
    index = searcher.index
    known: dict[str, FileState] = {}
    if state is not None:
        for path, s in state.files.items():
            if s.id is None or s.id in index:
                known[path] = s
    recorded = {s.id for s in known.values() if s.id is not None}
    for r in index.records():
        if r.path and r.id not in recorded and r.path not in known:
            try:
                st = os.stat(r.path)
                known[r.path] = FileState(r.path, st.st_size, st.st_mtime_ns, None, r.id)  # hashed only if it changes
            except OSError:  # the file is gone: a stamp that matches nothing, so it counts as removed
                known[r.path] = FileState(r.path, -1, -1, None, r.id)
    return known


def _maybe_recalibrate(searcher, report: SyncReport, force: bool | None, seed: int, labels_before: set) -> bool:
    """Recalibrate when asked, or (``force`` None) when the gallery changed enough since the last calibration."""
    manifest = searcher.index.manifest
    before = int(manifest.extra.get(CHANGES_KEY, 0))
    changes = before + report.added + report.removed + report.changed
    size = max(1, report.gallery_size)
    verdicts = getattr(searcher, "verdicts", None)  # how sure a match is: calibrated with the threshold
    if force is None:
        if manifest.threshold is None and verdicts is None:
            searcher.index.manifest = manifest.replace(extra={**manifest.extra, CHANGES_KEY: changes})
            return False
        labels_now = {r.label for r in searcher.index.records() if r.label is not None}
        force = changes > RECALIBRATE_FRACTION * size or labels_before != labels_now
    if not force:
        searcher.index.manifest = manifest.replace(extra={**manifest.extra, CHANGES_KEY: changes})
        return False
    from simlib.search.calibrate import calibrate_threshold

    try:
        searcher.set_threshold(calibrate_threshold(searcher, seed=seed))
    except SimlibError:  # too small a gallery to calibrate: keep the old threshold
        return False
    if verdicts is not None:
        from simlib.search.gallery import calibrate_verdicts_of  # as `simlib calibrate` does

        calibrate_verdicts_of(searcher, lambda note: None)
    m = searcher.index.manifest
    searcher.index.manifest = m.replace(extra={**m.extra, CHANGES_KEY: 0})
    return True


def state_vectors_consistent(searcher, index_dir: str | os.PathLike) -> bool:
    """Whether every indexed file has an entry in the file table with its id (a check for tests and the benchmark)."""
    state = FolderState.load(work_dir(index_dir))
    if state is None:
        return False
    ids = {s.id for s in state.files.values() if s.id is not None}
    return ids == set(np.asarray(searcher.index.ids).tolist())
