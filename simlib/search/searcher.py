"""Query images against an index: the model and the index that belong together. An index folder written by
:meth:`Searcher.save` holds the index and the model that embedded it (``model/``); pairing an index with a
different model is refused. The searcher only uses the :class:`simlib.index.IndexBackend` interface."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simlib.config import IndexConfig
from simlib.data import DecodeErrors, ImageTable, collect_images
from simlib.errors import SimlibError
from simlib.index import (
    DEFAULT_BACKEND,
    Filters,
    IndexBackend,
    Record,
    Threshold,
    backend_class,
    build_index,
    create_index,
    open_index,
)
from simlib.model import MODEL_SUBDIR, Embedder, saved_model
from simlib.model.embed import EmbedResult
from simlib.search.confidence import Verdicts
from simlib.search.copies import CopyCut, Thumbnails, merge_copies
from simlib.search.hit import Hit
from simlib.search.info import GalleryInfo
from simlib.search.probability import match_probability
from simlib.search.tables import table_records
from simlib.storage import link_or_copy, resolved_path


class Searcher:
    """An embedder and the index it built: ``Searcher(embedder, index).query(image, k)``."""

    def __init__(self, embedder: Embedder, index: IndexBackend, check: bool = True) -> None:
        """Pair ``embedder`` with ``index``.

        Args:
            embedder: the embedding model.
            index: the index it built.
            check: refuse an index whose manifest names another model's fingerprint.
        """
        if index.dim != embedder.dim:
            raise SimlibError(
                f"this index holds {index.dim}-d vectors but the model makes "
                f"{embedder.dim}-d ones: rebuild the index with this model"
            )
        self.embedder = embedder
        self.index = index
        # path -> records, valid while the index's (size, next id) stays the same
        self._by_path: tuple[tuple[int, int], dict[str, list[Record]]] | None = None
        self._verdicts: tuple[dict, Verdicts] | None = None  # the manifest's verdicts, parsed once
        self._thumbs = Thumbnails()  # for the calibrated copy check
        built_by = index.manifest.model_fingerprint
        if check and built_by and built_by != embedder.fingerprint:
            raise SimlibError(
                "this index was built by a different model (fingerprint "
                f"{built_by} vs {embedder.fingerprint}): rebuild it with `simlib index --model ...`"
            )

    @property
    def fingerprint(self) -> str:
        """The embedder's fingerprint (the one the index records)."""
        return self.embedder.fingerprint

    # ------------------------------------------------------------------ building and saving
    @classmethod
    def from_table(
        cls,
        embedder: Embedder,
        table: ImageTable,
        config: IndexConfig | None = None,
        progress: bool | str = True,
        batch_size: int = 32,
        *,
        backend: str = DEFAULT_BACKEND,
        uri: str | None = None,
        collection: str | None = None,
    ) -> tuple[Searcher, EmbedResult]:
        """Embed every image of ``table`` and index it; returns the searcher and the embedding result
        (whose ``skipped`` lists images that could not be read; their paths are recorded in the manifest).

        A backend that streams (:attr:`~simlib.index.IndexBackend.streams_build`: Milvus, with ``uri`` a
        ``.db`` path or ``http://host:19530``) gets the vectors chunk by chunk as they are embedded (see
        :meth:`from_table_streaming`); another one is built from all of them at once.
        """
        if backend_class(backend).streams_build:
            index = create_index(
                backend,
                embedder.dim,
                config,
                attributes=sorted({k for a in table.attributes for k in a}),
                uri=uri,
                collection=collection,
                expected_count=len(table),
            )
            searcher, result = cls.from_table_streaming(
                embedder, table, index, progress=progress, batch_size=batch_size
            )
        else:
            result = embedder.embed_table(table, batch_size=batch_size, progress=progress)
            if len(result.rows) == 0:
                raise SimlibError(
                    f"none of the {len(table)} images could be read; first error: "
                    + next(iter(result.skipped.values()), "none")
                )
            records = table_records(table, result.rows)
            index = build_index(backend, result.embeddings, records, config, uri=uri, collection=collection)
            index.manifest = index.manifest.replace(model_fingerprint=embedder.fingerprint, data=table.name)
            searcher = cls(embedder, index, check=False)
        if table.paths is not None:  # an app does not re-index because of images that never could be read
            skipped = tuple(resolved_path(table.paths[r]) for r in result.skipped)
            index.manifest = index.manifest.replace(skipped_paths=skipped)
        return searcher, result

    @classmethod
    def from_vectors(cls, embedder: Embedder, vectors, records, config=None, **manifest: Any) -> Searcher:
        """A searcher over vectors ``embedder`` already made (e.g. read back from a resumed run's chunks), built
        in one go on the default backend; ``manifest``: what to record (``data``, ``next_id``, ``skipped_paths``)."""
        index = build_index(DEFAULT_BACKEND, vectors, records, config)
        index.manifest = index.manifest.replace(model_fingerprint=embedder.fingerprint, **manifest)
        return cls(embedder, index, check=False)

    @classmethod
    def from_table_streaming(
        cls,
        embedder: Embedder,
        table: ImageTable,
        index: IndexBackend,
        progress: bool | str = True,
        batch_size: int = 32,
        chunk_size: int = 1024,
    ) -> tuple[Searcher, EmbedResult]:
        """Embed ``table`` and add it to the empty ``index`` in chunks of about ``chunk_size`` vectors.

        Memory stays at one chunk whatever the gallery size. The returned :class:`EmbedResult`
        lists the rows indexed and the rows skipped, with an empty ``embeddings`` array.
        """
        errors = DecodeErrors()
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        done: list[np.ndarray] = []

        def flush() -> None:
            if pending:
                vectors = np.concatenate([v for v, _ in pending])
                rows = np.concatenate([r for _, r in pending])
                index.add(vectors, table_records(table, rows))
                done.append(rows)
                pending.clear()

        try:
            for vectors, rows in embedder.embed_batches(table, batch_size=batch_size, progress=progress, errors=errors):
                pending.append((vectors, rows))
                if sum(len(r) for _, r in pending) >= chunk_size:
                    flush()
            flush()
            index.settle()  # a database indexes in the background: wait for it
        except BaseException:
            index.close()
            raise
        if not done:
            index.close()
            raise SimlibError(
                f"none of the {len(table)} images could be read; first error: "
                + next(iter(errors.reasons.values()), "none")
            )
        index.manifest = index.manifest.replace(model_fingerprint=embedder.fingerprint, data=table.name)
        result = EmbedResult(
            embeddings=np.zeros((0, embedder.dim), np.float32),
            rows=np.concatenate(done),
            skipped=dict(sorted(errors.reasons.items())),
        )
        return cls(embedder, index, check=False), result

    def save(self, directory: str | os.PathLike, reuse_model: str | os.PathLike | None = None) -> Path:
        """Write index and model into one folder, atomically.

        Args:
            directory: the index folder.
            reuse_model: a saved model folder (e.g. the index's own ``model/`` after
                :meth:`add_images`): when it holds this very model (same fingerprint) it is
                hard-linked (or copied) instead of serialising the model again, so updating a
                gallery does not rewrite ~90 MB.
        """
        fingerprint = self.fingerprint
        self.index.manifest = self.index.manifest.replace(
            model_fingerprint=fingerprint, model_config=self.embedder.config, model_dir=MODEL_SUBDIR
        )

        def write_model(tmp: Path) -> None:
            reused = saved_model(reuse_model) if reuse_model is not None else None
            if reused is not None and reused.fingerprint == fingerprint:
                shutil.copytree(reused.directory, tmp / MODEL_SUBDIR, copy_function=link_or_copy)
            else:
                self.embedder.save(tmp / MODEL_SUBDIR)

        return self.index.save(directory, write_extra=write_model)

    def save_updated(self, index_dir: str | os.PathLike) -> Path:
        """Save an index loaded from ``index_dir`` after changing its gallery or manifest, reusing its model files.

        The one way the CLI (``add``, ``remove``, ``calibrate``) and the app write back the folder they
        serve: :meth:`save` with ``reuse_model`` set to the folder's own model.
        """
        return self.save(index_dir, reuse_model=Path(index_dir) / self.index.manifest.model_dir)

    @classmethod
    def load(
        cls,
        index_dir: str | os.PathLike,
        model_dir: str | os.PathLike | None = None,
        uri: str | None = None,
        mmap: bool = False,
    ) -> Searcher:
        """Open an index folder with its own model, or with ``model_dir`` (checked to be the same model).

        The backend (FAISS or Milvus) is the one the folder's manifest names; ``uri`` reaches a
        Milvus collection at another address than the manifest's; ``mmap`` memory-maps a FAISS
        index's vectors instead of reading them (read-only: for indexes larger than memory).
        """
        index_dir = Path(index_dir)
        index = open_index(index_dir, uri=uri, mmap=mmap)
        try:
            embedder = Embedder.load(Path(model_dir) if model_dir else index_dir / index.manifest.model_dir)
            return cls(embedder, index)
        except BaseException:
            index.close()
            raise

    def close(self) -> None:
        """Release the index's connections and files (Milvus Lite holds its file until then)."""
        self.index.close()

    # ------------------------------------------------------------------ querying
    def query(
        self,
        image: Any,
        k: int = 5,
        filters: Filters | None = None,
        exclude_self: bool = False,
        exclude_ids: Sequence[int] = (),
        collapse_duplicates: float | CopyCut | None = None,
    ) -> list[Hit]:
        """The ``k`` most similar gallery images to ``image``.

        Args:
            image: a path, bytes, PIL image or numpy array.
            k: number of results.
            filters: attribute (or "label") -> value(s); applied inside the search.
            exclude_self: when ``image`` is a path inside the gallery, leave that entry out.
            exclude_ids: ids to leave out.
            collapse_duplicates: when two results are copies: a cosine threshold (e.g. 0.97), or a
                :class:`~simlib.search.copies.CopyCut` calibrated for this model (:attr:`copy_cut`); a
                result that is a copy of a better-ranked one (or the same file) is merged into it and
                counted in its ``duplicates``; the top-K is filled with distinct items. None: off.

        Hits under the index's calibrated "good match" cut have ``weak=True``; with calibrated verdicts
        (:func:`simlib.search.confidence.calibrate_verdicts`) each hit carries its ``probability`` of being
        the same kind as the query; when the index's "unlike the gallery" check (:meth:`unlike_gallery`) flags
        ``image``, every hit has ``unlike_gallery=True`` and ``weak=True``, and no probability."""
        exclude = set(int(i) for i in exclude_ids)
        vector = self.embedder.embed_images([image])[0]  # first: a bad file fails here with a clear SimlibError
        if exclude_self and isinstance(image, str | os.PathLike):
            exclude |= set(self.index.ids_with_path(str(Path(image).resolve())))
        return self.query_vector(vector, k, filters, exclude, collapse_duplicates, image=image)

    def query_vector(
        self,
        vector: np.ndarray,
        k: int = 5,
        filters: Filters | None = None,
        exclude_ids: Sequence[int] | set = (),
        collapse_duplicates: float | CopyCut | None = None,
        image: Any = None,
    ) -> list[Hit]:
        """Like :meth:`query` for an embedding already computed; ``image``: the query image it was made from,
        for the "unlike the gallery" check (:meth:`unlike_gallery`; None: not checked)."""
        exclude = set(int(i) for i in exclude_ids)
        unlike = bool(self.unlike_gallery(image)) if image is not None else False
        if collapse_duplicates is not None:
            return self._judged(self._collapsed(vector, k, filters, exclude, collapse_duplicates), unlike)
        scores, ids = self.index.search(vector[None, :], k + len(exclude), filters)
        hits = []
        for s, i in zip(scores[0], ids[0], strict=True):
            if i < 0 or int(i) in exclude:
                continue
            hits.append(self._hit(len(hits) + 1, int(i), float(s)))
            if len(hits) == k:
                break
        return self._judged(hits, unlike)

    def unlike_gallery(self, image: Any) -> bool | None:
        """Whether ``image`` looks unlike anything in the gallery, by the index's calibrated pixel check
        (:class:`~simlib.search.novelty.NoveltyCut`); None when the index has no supported check."""
        verdicts = self.verdicts
        if verdicts is None or not verdicts.checks_novelty:
            return None
        return verdicts.novelty.flags(image)  # type: ignore[union-attr]

    def _judged(self, hits: list[Hit], unlike: bool = False) -> list[Hit]:
        """The hits with their calibrated probability of being the same kind (unchanged without a curve); when the
        query is ``unlike`` the gallery, every hit is marked so, weak, and without a probability (the curve says
        nothing of queries unlike those it was fitted on)."""
        if unlike:
            return [dataclasses.replace(h, unlike_gallery=True, weak=True, probability=None) for h in hits]
        verdicts = self.verdicts
        if verdicts is None or verdicts.curve is None or not hits:
            return hits
        p = match_probability([h.score for h in hits], verdicts.curve, ranks=[max(h.rank, 1) for h in hits])
        return [dataclasses.replace(h, probability=float(q)) for h, q in zip(hits, p, strict=True)]

    def score_ids(self, vector: np.ndarray, ids: Sequence[int], image: Any = None) -> list[Hit]:
        """Gallery entries scored against an embedded query, as :meth:`query` would show them (rank 0).

        The score is the cosine with the stored vector; ``weak`` as in a search (with the query ``image``
        given, also when it looks unlike the gallery). For scoring a result the user picked (explain,
        feedback) without trusting a score sent by a client.

        Raises:
            SimlibError: an id that is not in the gallery.
        """
        records = [self.index.record(int(i)) for i in ids]  # SimlibError for an unknown id
        stored = self.index.vectors_of([r.id for r in records])
        hits = [self._hit(0, r.id, float(vector @ v)) for r, v in zip(records, stored, strict=True)]
        return self._judged(hits, image is not None and bool(self.unlike_gallery(image)))

    def _hit(self, rank: int, id_: int, score: float, duplicates: int = 0) -> Hit:
        r = self.index.record(id_)
        threshold = self.threshold
        weak = threshold is not None and score < threshold  # the one place a hit is judged weak
        return Hit(rank, r.id, score, r.path, r.label, r.attributes, duplicates, weak)

    def _collapsed(
        self, vector: np.ndarray, k: int, filters: Filters | None, exclude: set, cut: float | CopyCut
    ) -> list:
        """Top-``k`` distinct results: over-fetch, merge near-copies into the better-ranked hit, and
        fetch more until ``k`` distinct items are found or the gallery is exhausted.

        A hit's ``duplicates`` counts the near-copies ranked above the last distinct result kept:
        exactly the places the collapse gave to other items.
        """
        fetch = 4 * k + len(exclude)
        while True:
            scores, ids = self.index.search(vector[None, :], fetch, filters)
            found = [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
            candidates = [(i, s) for i, s in found if i not in exclude]
            vectors = self.index.vectors_of([i for i, _ in candidates])
            records = [self.index.record(i) for i, _ in candidates]
            kept = merge_copies(candidates, vectors, records, k, cut, self._thumbs)
            exhausted = len(found) < fetch or fetch >= len(self.index)
            if len(kept) == k or exhausted:
                return [self._hit(rank, i, s, d) for rank, (i, s, d) in enumerate(kept, 1)]
            fetch = min(2 * fetch, len(self.index))

    @property
    def verdicts(self) -> Verdicts | None:
        """How sure a match is, as calibrated for this index (None: not calibrated)."""
        stored = self.index.manifest.verdicts
        if not stored:
            return None
        if self._verdicts is None or self._verdicts[0] is not stored:
            self._verdicts = (stored, Verdicts.from_dict(stored))
        return self._verdicts[1]

    def set_verdicts(self, verdicts: Verdicts | None) -> None:
        """Keep ``verdicts`` (from :func:`simlib.search.confidence.calibrate_verdicts`) with the index; save
        the searcher to keep them on disk."""
        self.index.manifest = self.index.manifest.replace(verdicts=None if verdicts is None else verdicts.to_dict())

    @property
    def copy_cut(self) -> CopyCut | None:
        """When two results are copies, as calibrated for this model (None: not calibrated)."""
        verdicts = self.verdicts
        return None if verdicts is None else verdicts.copies

    @property
    def threshold(self) -> float | None:
        """The calibrated "good match" score in force (None: none, or one the model cannot support): the verdicts'
        two-sided "no good match" cut when calibrated, else an older precision :class:`Threshold`."""
        verdicts = self.verdicts
        if verdicts is not None and verdicts.no_match is not None:
            return float(verdicts.no_match.score) if verdicts.no_match.supported else None
        threshold = self.index.manifest.threshold
        return None if threshold is None or not threshold.usable else float(threshold.score)

    @property
    def calibration(self) -> Threshold | None:
        """The index's :class:`~simlib.index.Threshold` as calibrated (None when not calibrated)."""
        return self.index.manifest.threshold

    def set_threshold(self, threshold: Threshold | None) -> None:
        """Keep ``threshold`` (from :func:`simlib.search.calibrate.calibrate_threshold`) as the index's
        "good match" threshold (None: none); save the searcher to keep it on disk."""
        self.index.manifest = self.index.manifest.replace(threshold=threshold)

    def unsupported_note(self) -> str:
        """The one line said instead of "no good match" when the model cannot support its calibration ("" when
        it can, or when there is none): the verdicts' cut when calibrated, else the older threshold's."""
        verdicts = self.verdicts
        if verdicts is not None and verdicts.no_match is not None:
            return verdicts.no_match.unsupported_note(verdicts.checks_novelty)
        calibration = self.calibration
        return "" if calibration is None else calibration.unsupported_note()

    def info(self) -> GalleryInfo:
        """Gallery size, index, model settings and calibration (:class:`GalleryInfo`): what a status line
        shows. Cheap enough to call on every query."""
        verdicts = self.verdicts
        checks = verdicts is not None and verdicts.checks_novelty
        return GalleryInfo.of(self.embedder, self.index, self.threshold, self.unsupported_note(), unlike_check=checks)

    # ------------------------------------------------------------------ changing the gallery
    def add_images(
        self, paths: Sequence[str | os.PathLike], progress: bool | str = False, batch_size: int = 32
    ) -> tuple[list[int], dict[str, str]]:
        """Embed and add image files (folders are searched recursively) without rebuilding.

        New ids continue after the largest id the index has ever held. A file already in the
        index (same resolved path) is skipped, as is one that cannot be read. Labels come from
        the parent folder's name only when every image of the index is labelled that way;
        otherwise new images have no label. Save with :meth:`save` to keep the change.

        Returns:
            ``(added_ids, skipped)``: the new ids in order, and path -> reason for files left out.
        """
        files, skipped = collect_images(paths)
        known = self._records_by_path()
        chosen: dict[str, Path] = {}  # resolved path -> the path as given (its folder names the label)
        for f in files:
            resolved = str(f.resolve())
            if resolved in known:
                skipped[str(f)] = f"already in the index (id {known[resolved][0].id})"
            elif resolved in chosen:
                skipped[str(f)] = "given twice"
            else:
                chosen[resolved] = f
        if not chosen:
            return [], skipped
        start = self._next_id()
        ids = np.arange(start, start + len(chosen), dtype=np.int64)
        folder_labels = self._labels_from_folders()
        labels = np.asarray([f.parent.name for f in chosen.values()], dtype=object) if folder_labels else None
        table = ImageTable(ids=ids, paths=tuple(chosen), labels=labels, name="added images")
        result = self.embedder.embed_table(table, batch_size=batch_size, progress=progress)
        for row, reason in result.skipped.items():
            skipped[str(list(chosen.values())[row])] = reason
        # unreadable files use up no ids: the added ones are numbered in order
        added = list(range(start, start + len(result.rows)))
        records = [dataclasses.replace(r, id=i) for r, i in zip(table_records(table, result.rows), added, strict=True)]
        if records:
            self.index.add(result.embeddings, records)
        self.index.manifest = self.index.manifest.replace(next_id=start + len(added))
        return added, skipped

    def add_vectors(self, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[str | None]) -> list[int]:
        """Add vectors this model already embedded (a gallery file that moved) under new ids; returns the ids."""
        start = self._next_id()
        ids = list(range(start, start + len(paths)))
        records = [Record(id=i, path=p, label=lab, attributes={}) for i, p, lab in zip(ids, paths, labels, strict=True)]
        self.index.add(np.asarray(vectors, np.float32), records)
        self.index.manifest = self.index.manifest.replace(next_id=start + len(ids))
        return ids

    def remove(self, ids: Sequence[int]) -> list[int]:
        """Remove gallery entries by id; returns the ids that were not in the index. Save to keep the change."""
        missing = [int(i) for i in ids if int(i) not in self.index]
        self.index.manifest = self.index.manifest.replace(next_id=self._next_id())  # removed ids are never reused
        self.index.remove([int(i) for i in ids])
        return missing

    def ids_of_path(self, path: str | os.PathLike) -> list[int]:
        """Gallery ids of an image file (by resolved path); empty when it is not in the index."""
        return [r.id for r in self._records_by_path().get(str(Path(path).resolve()), [])]

    def _next_id(self) -> int:
        largest = int(self.index.ids.max()) + 1 if len(self.index) else 0
        return max(largest, self.index.manifest.next_id)

    def _labels_from_folders(self) -> bool:
        records = self.index.records()
        return bool(records) and all(r.path and r.label == Path(r.path).parent.name for r in records)

    def _records_by_path(self) -> dict[str, list[Record]]:
        cached = self._by_path
        if cached is None or cached[0] != (len(self.index), self._next_id()):
            by_path: dict[str, list[Record]] = {}
            for r in self.index.records():
                if r.path:
                    by_path.setdefault(r.path, []).append(r)
            self._by_path = cached = ((len(self.index), self._next_id()), by_path)
        return cached[1]
