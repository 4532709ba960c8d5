"""User feedback on results, stored append-only, and turned into training triplets.

A feedback folder holds ``feedback.jsonl`` (one JSON object per verdict) and ``queries/``
(each query image saved once, as PNG, under the SHA-256 of its pixels, so a re-uploaded
query maps to the same file). Each line is written with a single ``os.write`` on a file
opened with ``O_APPEND`` and then fsynced: POSIX appends of one write never interleave, so
concurrent writers (the app's worker threads, or several processes) lose nothing, and a
crash can at worst leave a torn last line, which the reader skips.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from simlib.errors import SimlibError
from simlib.storage import store_png

FEEDBACK_FILE = "feedback.jsonl"
QUERIES_DIR = "queries"
VERDICTS = ("similar", "not_similar")
CLEARED = "cleared"  # a verdict taken back: the pair counts as never judged


@dataclasses.dataclass(frozen=True)
class Feedback:
    """One verdict on one result.

    Attributes:
        query: path of the stored query image.
        result_id: the result's gallery id.
        result_path: the result's image file (None if the index keeps no paths).
        verdict: "similar" or "not_similar".
        timestamp: UTC time, ISO 8601.
        model_fingerprint: the model that produced the result (None if unknown).
        score: the result's similarity score when it was shown (None if unknown).
    """

    query: str
    result_id: int
    result_path: str | None
    verdict: str
    timestamp: str
    model_fingerprint: str | None = None
    score: float | None = None


class FeedbackStore:
    """Append-only feedback in a folder: ``FeedbackStore(dir).add(query_image, hit, "similar")``."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FEEDBACK_FILE

    def save_query(self, image: Any) -> Path:
        """Store a query image once under its content hash (:func:`simlib.storage.store_png`); returns its path."""
        return store_png(image, self.directory / QUERIES_DIR)

    def add(
        self,
        query: Any,
        result_id: int,
        verdict: str,
        result_path: str | None = None,
        model_fingerprint: str | None = None,
        score: float | None = None,
    ) -> Feedback:
        """Record a verdict on a result.

        Args:
            query: the query image (path, bytes, PIL image or array); stored under ``queries/``.
            result_id: the result's gallery id (``Hit.id``).
            verdict: "similar" or "not_similar".
            result_path: the result's image file (``Hit.path``).
            model_fingerprint: the fingerprint of the embedder that ranked it (``Embedder.fingerprint``).
            score: ``Hit.score``.
        """
        if verdict not in (*VERDICTS, CLEARED):
            raise SimlibError(f"verdict must be 'similar', 'not_similar' or 'cleared', not {verdict!r}")
        entry = Feedback(
            query=str(self.save_query(query)),
            result_id=int(result_id),
            result_path=None if result_path is None else str(Path(result_path).resolve()),
            verdict=verdict,
            timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            model_fingerprint=model_fingerprint,
            score=None if score is None else float(score),
        )
        self._append(json.dumps(dataclasses.asdict(entry), ensure_ascii=False))
        return entry

    def add_hit(self, query: Any, hit, verdict: str, model_fingerprint: str | None = None) -> Feedback:
        """:meth:`add` for a :class:`simlib.search.Hit`."""
        return self.add(query, hit.id, verdict, hit.path, model_fingerprint, hit.score)

    def _append(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)  # one write: appends of a whole line never interleave
            if written != len(data):
                raise SimlibError(f"short write to {self.path} (disk full?)")
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[Feedback]:
        """Every complete entry, oldest first (see :func:`read_feedback`)."""
        return read_feedback(self.path)

    def current(self) -> dict[tuple[str, int], Feedback]:
        """One entry per (query, result id): the latest verdict, pairs whose verdict was taken back left out.

        The file keeps every change (append-only, crash-safe); this is what the verdicts are now.
        """
        return current_verdicts(self.read()) if self.path.is_file() else {}

    def verdict(self, query: Any, result_id: int) -> str | None:
        """The current verdict on a result of this query ("similar", "not_similar"), or None."""
        entry = self.current().get((str(self.save_query(query)), int(result_id)))
        return None if entry is None else entry.verdict


def read_feedback(path: str | os.PathLike) -> list[Feedback]:
    """Read a feedback file (or folder), skipping a torn or foreign line instead of failing."""
    path = Path(path)
    if path.is_dir():
        path = path / FEEDBACK_FILE
    if not path.is_file():
        raise SimlibError(f"no feedback file at {path}: give the feedback folder or its {FEEDBACK_FILE}")
    names = {f.name for f in dataclasses.fields(Feedback)}
    entries = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                raw = json.loads(line)
                entry = Feedback(**{k: v for k, v in raw.items() if k in names})
            except (json.JSONDecodeError, TypeError):
                continue
            if entry.verdict in (*VERDICTS, CLEARED):
                entries.append(entry)
    return entries


def current_verdicts(entries: Iterable[Feedback]) -> dict[tuple[str, int], Feedback]:
    """The latest entry per (query, result id), in file (time) order; pairs last marked cleared are left out."""
    latest: dict[tuple[str, int], Feedback] = {}
    for e in entries:
        latest[(e.query, e.result_id)] = e
    return {pair: e for pair, e in latest.items() if e.verdict != CLEARED}


def feedback_triplets(
    source: str | os.PathLike | Iterable[Feedback],
    model_fingerprint: str | None = None,
) -> list[tuple[str, str | None, str | None]]:
    """Training triplets from feedback: the query is the anchor, results marked similar are
    positives, results marked not similar are hard negatives.

    The latest verdict on a (query, result) pair wins. Each query yields
    ``max(#positives, #negatives)`` triplets pairing its positives and negatives in turn
    (cycling the shorter list); a query with only one kind gives triplets with ``None`` for the
    other, for training to fill (:func:`simlib.train.feedback_images`: an augmented copy of the
    query as positive, a random gallery image as negative).

    Args:
        source: a feedback file or folder, or entries from :func:`read_feedback`.
        model_fingerprint: keep only feedback given on results of this model (None: all).

    Returns:
        ``[(anchor_path, positive_path | None, negative_path | None), ...]`` sorted by anchor;
        results without a path are left out.
    """
    entries = read_feedback(source) if isinstance(source, str | os.PathLike) else list(source)
    latest: dict[tuple[str, str], str] = {}
    if model_fingerprint:
        entries = [e for e in entries if e.model_fingerprint == model_fingerprint]
    for e in current_verdicts(entries).values():
        if e.result_path is not None:
            latest[(e.query, e.result_path)] = e.verdict
    by_query: dict[str, tuple[list[str], list[str]]] = {}
    for (query, result), verdict in sorted(latest.items()):
        pos, neg = by_query.setdefault(query, ([], []))
        (pos if verdict == "similar" else neg).append(result)
    triplets: list[tuple[str, str | None, str | None]] = []
    for query, (pos, neg) in sorted(by_query.items()):
        for n in range(max(len(pos), len(neg))):
            triplets.append((query, pos[n % len(pos)] if pos else None, neg[n % len(neg)] if neg else None))
    return triplets
