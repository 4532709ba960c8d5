"""The manifest of an index folder: one typed, versioned record of what the folder holds.

Every backend writes ``manifest.json`` from an :class:`IndexManifest`; callers change it through
the object (``index.manifest = index.manifest.replace(next_id=...)``), never through dict keys.

Format history:
    1: an untyped dict that several modules wrote keys into; ``backend`` absent for FAISS
       folders saved without a searcher. Still read: missing keys take their defaults.
    2: written from :class:`IndexManifest`; ``backend`` always present. The JSON keys are those
       of format 1, so what the README documents and scripts read keeps its meaning.

Keys this version does not know (from a newer minor change, or added by hand) are kept in
:attr:`IndexManifest.extra` and written back on save, so opening and saving a folder loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simlib import __version__
from simlib.config import IndexConfig, ModelConfig, from_dict, to_dict
from simlib.errors import SimlibError
from simlib.model.folder import MODEL_SUBDIR
from simlib.storage import load_json, recover_dir

MANIFEST_FILE = "manifest.json"
FORMAT = "simlib-index"
FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Threshold:
    """The calibrated "good match" score (see :mod:`simlib.search.calibrate`) and how it was found.

    Attributes:
        score: hits scoring under it are weak.
        method: "top-1 same-class precision" (labelled gallery) or "near-copy score percentile".
        n_queries: validation queries it was calibrated on.
        seed: split and perturbation seed.
        val: fraction of the gallery used as validation queries.
        target: labelled method: the precision asked for.
        percentile: near-copy method: the percentile of near-copy scores used.
        precision: labelled method: the top-1 same-class precision above ``score``.
        reached: whether ``target`` was reached (else the most precise cut-off was kept).
        calibrated_at: ISO time of the calibration.
        coverage: share of the validation queries whose top-1 score clears ``score``.
        supported: whether the model can support the threshold: the target is reached and at least
            :data:`simlib.search.calibrate.MIN_COVERAGE` of the queries clear it. An unsupported threshold
            marks nothing weak (the model cannot tell good matches from bad ones); None: calibrated
            before this was recorded (treated as ``reached``).
    """

    score: float
    method: str = ""
    n_queries: int = 0
    seed: int = 0
    val: float | None = None
    target: float | None = None
    percentile: float | None = None
    precision: float | None = None
    reached: bool = True
    calibrated_at: str | None = None
    coverage: float | None = None
    supported: bool | None = None

    @property
    def usable(self) -> bool:
        """Whether hits under ``score`` may be called weak (see ``supported``)."""
        return self.reached if self.supported is None else self.supported

    # ------------------------------------------------------------------ what it says (one wording for every caller)
    def summary(self) -> str:
        """The calibration in one line: the score, what it reaches, on how many queries, how many clear it.

        ``0.7810 (top-1 same-class precision 0.90 above it, target 0.9; 978 validation queries, 43% of them
        clear it)``.
        """
        if self.precision is not None:
            how = f"top-1 same-class precision {self.precision:.2f} above it, target {self.target}"
        elif self.percentile is not None:
            how = f"percentile {self.percentile:g} of near-copy scores"
        else:
            how = self.method or "method not recorded"
        cleared = "" if self.coverage is None else f", {self.coverage:.0%} of them clear it"
        return f"{self.score:.4f} ({how}; {self.n_queries} validation queries{cleared})"

    def not_reached_note(self) -> str:
        """The warning when no cut-off reached the target precision ("" when it was reached)."""
        if self.reached:
            return ""
        return f"no cut-off reaches precision {self.target}; the most precise one is kept"

    def unsupported_note(self) -> str:
        """The one line said instead of "no good match" when the model cannot support its threshold ("" when it
        can): then no result is marked weak and "no good match" is never said."""
        if self.usable:
            return ""
        if not self.reached:
            measured = f"no score gives its top-1 results {self.target:.0%} same-class precision"
        elif self.coverage is not None:
            aim = f"{self.target:.0%} same-class precision" if self.target else "a reliable cut-off"
            measured = f"only {self.coverage:.0%} of the calibration queries reach the score at which it has {aim}"
        else:
            measured = "too few calibration queries clear its threshold"
        best = "" if self.precision is None else f" (best reached: {self.precision:.0%})"
        return (
            f"This model cannot tell good matches from bad ones: {measured}{best}, so no result is marked weak "
            'and "no good match" is never said.'
        )

    def warnings(self) -> list[str]:
        """:meth:`not_reached_note` and :meth:`unsupported_note`, those that apply."""
        return [note for note in (self.not_reached_note(), self.unsupported_note()) if note]

    def to_dict(self) -> dict[str, Any]:
        """As stored under ``"threshold"``: ``target`` or ``percentile`` only for the method that has it,
        ``coverage`` and ``supported`` only when the calibration recorded them."""
        out = dataclasses.asdict(self)
        for key in ("target", "percentile", "coverage", "supported"):
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Threshold:
        """Read a stored threshold (unknown keys ignored: they describe, they do not change the cut)."""
        return from_dict(cls, {**data, "score": float(data["score"])})


@dataclasses.dataclass(frozen=True)
class IndexManifest:
    """What an index folder's ``manifest.json`` says.

    Attributes:
        backend: "faiss" or "milvus": which class opens the folder.
        dimension: vector dimension.
        kind: the resolved index kind ("flat", "hnsw", "ivfpq").
        count: vectors in the index when it was saved.
        index_config: the :class:`IndexConfig` it was built with.
        metric: the similarity, in words.
        data: name of the gallery it was built from.
        next_id: the next id :meth:`simlib.search.Searcher.add_images` hands out (removed ids are never reused).
        skipped_paths: gallery images that could not be read when it was built (an app does not
            re-index because of them).
        threshold: the calibrated "good match" score, or None.
        verdicts: how sure a match is (:class:`simlib.search.confidence.Verdicts` as a dict: the "no good
            match" cut, the match probability curve, the copy cut), or None; read by the searcher.
        model_fingerprint: fingerprint of the model that embedded the gallery, or None.
        model_config: that model's config, for reading without loading the model.
        model_dir: the model's folder inside the index folder.
        uri: Milvus: a Lite ``.db`` path or a server address (never credentials).
        collection: Milvus: the collection name.
        attribute_fields: Milvus: attribute (and "label") -> schema field name.
        ivf_nlist: Milvus IVF: cells of the collection's index.
        milvus_index_type: Milvus: the server-side index type (FLAT, HNSW, IVF_FLAT).
        format_version: manifest format (1: written before this class; 2: this class).
        simlib_version: the simlib that saved the folder.
        saved_at: ISO time of the save.
        faiss_version: FAISS: the faiss library that wrote ``index.faiss``.
        pymilvus_version: Milvus: the client library used.
        extra: keys this version does not know, kept and written back unchanged.
    """

    backend: str = "faiss"
    dimension: int = 0
    kind: str = "flat"
    count: int = 0
    index_config: IndexConfig = dataclasses.field(default_factory=IndexConfig)
    metric: str = ""
    data: str | None = None
    next_id: int = 0
    skipped_paths: tuple[str, ...] = ()
    threshold: Threshold | None = None
    verdicts: dict[str, Any] | None = None
    model_fingerprint: str | None = None
    model_config: ModelConfig | None = None
    model_dir: str = MODEL_SUBDIR
    uri: str | None = None
    collection: str | None = None
    attribute_fields: dict[str, str] = dataclasses.field(default_factory=dict)
    ivf_nlist: int | None = None
    milvus_index_type: str | None = None
    format_version: int = FORMAT_VERSION
    simlib_version: str = __version__
    saved_at: str | None = None
    faiss_version: str | None = None
    pymilvus_version: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def replace(self, **changes: Any) -> IndexManifest:
        """A copy with ``changes`` (field name -> value): how callers update a manifest."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json`` (format 1 key names; fields left at None are omitted)."""
        known: dict[str, Any] = {"format": FORMAT}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None:
                continue
            if f.name in ("index_config", "model_config"):
                value = to_dict(value)
            elif f.name == "threshold":
                value = value.to_dict()
            elif f.name == "skipped_paths":
                value = list(value)
            elif f.name == "attribute_fields":
                if not value:
                    continue
                value = dict(value)
            known[f.name] = value
        return {**{k: v for k, v in self.extra.items() if k not in known}, **known}

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text (sorted keys, as ``manifest.json`` is written)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, where: str | os.PathLike = "the index") -> IndexManifest:
        """Read a manifest of format 1 or 2.

        Args:
            data: the parsed ``manifest.json``.
            where: the index folder, for error messages.

        Raises:
            SimlibError: not a simlib manifest, written by a newer simlib, or damaged.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise SimlibError(f"{where} is not a simlib index (manifest format {found!r})")
        damaged = f"{Path(where) / MANIFEST_FILE} is damaged"
        try:
            version = int(data.get("format_version", 1))
        except (TypeError, ValueError) as e:
            raise SimlibError(f"{damaged} ({type(e).__name__}: {e}); rebuild the index") from None
        if version > FORMAT_VERSION:
            raise SimlibError(f"{where} was written by a newer simlib ({data.get('simlib_version')}); upgrade")
        try:
            names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
            fields: dict[str, Any] = {k: v for k, v in data.items() if k in names}
            fields.pop("threshold", None)
            fields.pop("model_config", None)
            fields.update(
                format_version=version,
                dimension=int(data["dimension"]),
                count=int(data["count"]),
                kind=str(data["kind"]),
                backend=str(data.get("backend", "faiss")),  # format 1: absent for FAISS
                index_config=from_dict(IndexConfig, dict(data.get("index_config") or {})),
                next_id=int(data.get("next_id") or 0),
                skipped_paths=tuple(str(p) for p in data.get("skipped_paths") or ()),
                model_dir=str(data.get("model_dir") or MODEL_SUBDIR),
                attribute_fields={str(k): str(v) for k, v in dict(data.get("attribute_fields") or {}).items()},
            )
            if data.get("threshold"):
                fields["threshold"] = Threshold.from_dict(data["threshold"])
            if data.get("model_config"):
                fields["model_config"] = from_dict(ModelConfig, dict(data["model_config"]))
            if data.get("ivf_nlist") is not None:
                fields["ivf_nlist"] = int(data["ivf_nlist"])
            extra = {k: v for k, v in data.items() if k not in names and k != "format"}
            return cls(**fields, extra=extra)
        except SimlibError as e:  # a stored config that no longer validates
            raise SimlibError(f"{damaged} ({e}); rebuild the index") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SimlibError(f"{damaged} ({type(e).__name__}: {e}); rebuild the index") from None

    @classmethod
    def from_json(cls, text: str, where: str | os.PathLike = "the index") -> IndexManifest:
        """Parse ``manifest.json`` text (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SimlibError(f"{Path(where) / MANIFEST_FILE} is not valid JSON ({e}); rebuild the index") from None
        return cls.from_dict(data, where)


def read_manifest(directory: str | os.PathLike) -> IndexManifest:
    """The manifest of an index folder (repairing what an interrupted save left behind first).

    Args:
        directory: the index folder, or its ``manifest.json``.
    """
    directory = index_folder(directory)
    recover_dir(directory)
    if not directory.is_dir():
        raise SimlibError(f"index folder {directory} does not exist: build one with `simlib index`")
    return IndexManifest.from_dict(load_json(directory / MANIFEST_FILE), directory)


def index_folder(path: str | os.PathLike) -> Path:
    """The index folder named by ``path``: the folder itself, or the folder of a ``manifest.json``."""
    path = Path(path)
    return path.parent if path.name == MANIFEST_FILE else path
