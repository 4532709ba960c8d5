"""Pick up changes to a photo folder while an app or ``simlib sync --watch`` runs, through ``watchdog``.

``watchdog`` (a maintained library: inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on
Windows) reports file events; :class:`FolderWatcher` waits until the folder has been quiet for
``settle`` seconds (a camera import or a copy of hundreds of files is one sync, not hundreds) and
then runs :func:`simlib.photos.sync.sync_searcher` under the caller's lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from simlib.photos.store import FolderState, work_dir
from simlib.photos.sync import SyncReport, sync_searcher


class FolderWatcher:
    """Sync ``searcher`` with its folder a few seconds after the folder changes.

    Args:
        searcher: the open :class:`~simlib.search.Searcher` (changed in place, under ``lock``).
        index_dir: its index folder (saved after each sync).
        data: the photo folder (default: the one the index records).
        lock: held while syncing (the app's searcher lock), so no query sees a half-changed index.
        settle: seconds without events before a sync.
        on_sync: called with each :class:`~simlib.photos.sync.SyncReport` (e.g. to log or refresh a page).
    """

    def __init__(
        self,
        searcher,
        index_dir: str | os.PathLike,
        data: str | os.PathLike | None = None,
        *,
        lock: threading.Lock | threading.RLock | None = None,
        settle: float = 2.0,
        on_sync: Callable[[SyncReport], None] | None = None,
    ) -> None:
        from simlib.errors import SimlibError

        self.searcher = searcher
        self.index_dir = Path(index_dir).expanduser().absolute()
        state = FolderState.load(work_dir(self.index_dir))
        root = data if data is not None else (state.root if state else None)
        if not root:
            raise SimlibError(f"{index_dir} does not record its photo folder: give it with --data DIR")
        self.root = str(Path(root).expanduser().resolve())
        self.lock = lock or threading.Lock()
        self.settle = settle
        self.on_sync = on_sync
        self.reports: list[SyncReport] = []
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._observer = None
        self._thread: threading.Thread | None = None

    def start(self) -> FolderWatcher:
        """Start watching (a watchdog observer thread and one sync thread)."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self
        ignored = (str(self.index_dir), str(work_dir(self.index_dir)))

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                paths = [str(getattr(event, "src_path", "")), str(getattr(event, "dest_path", "") or "")]
                if event.event_type in ("opened", "closed_no_write"):
                    return
                if all(p.startswith(ignored) or not p for p in paths):
                    return
                watcher._changed.set()

        self._observer = Observer()
        self._observer.schedule(Handler(), self.root, recursive=True)
        self._observer.start()
        self._thread = threading.Thread(target=self._run, name="simlib-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._changed.wait(0.5):
                continue
            # wait until the folder has been quiet for `settle` seconds
            while self._changed.is_set() and not self._stop.is_set():
                self._changed.clear()
                self._stop.wait(self.settle)
            if self._stop.is_set():
                return
            try:
                with self.lock:
                    report = sync_searcher(self.searcher, self.index_dir, self.root)
            except Exception as e:  # a failed sync must not end the watch: say why, try at the next change
                import sys

                print(f"simlib: sync failed: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            self.reports.append(report)
            if self.on_sync is not None:
                self.on_sync(report)

    def stop(self) -> None:
        """Stop watching (a sync under way finishes first)."""
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=60)
