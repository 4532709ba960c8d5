"""What a served gallery is, as one typed value: :class:`GalleryInfo` (``Searcher.info()``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from simlib.index import IndexBackend, Threshold
from simlib.model import Embedder


@dataclasses.dataclass(frozen=True)
class GalleryInfo:
    """Gallery size, index, model settings and calibration: what a status line or a report shows.

    Cheap to make (no search, no model call): :meth:`simlib.search.Searcher.info` is called on every app query.

    Attributes:
        gallery_size: images in the index.
        backend: the index's backend ("faiss", "milvus"): for display; ask the capabilities below.
        index_kind: the resolved index kind ("flat", "hnsw", "ivfpq").
        rebuilds_while_serving: the backend can rebuild the gallery while this index keeps answering
            (:attr:`simlib.index.IndexBackend.rebuilds_while_serving`): what training from the app needs.
        image_size: the model's input side in pixels.
        embedding_dim: the embedding size.
        weights: the backbone's starting weights ("imagenet", "none" or a file path).
        trained: the model was trained by simlib.
        backbone: "resnet50" or "tiny".
        model_fingerprint: the model's fingerprint (the one the index records).
        threshold: the calibrated "good match" score in force, or None (not calibrated, or calibrated but
            unsupported by the model: see ``calibration``).
        unsupported_note: the one line said instead of "no good match" when the model cannot support its
            calibration ("" otherwise).
        calibration: the full calibration (:class:`~simlib.index.Threshold`), usable or not; None when
            not calibrated.
        unlike_check: a supported "unlike the gallery" check is in force (queries it flags get "no good
            match" whatever their scores).
    """

    gallery_size: int
    backend: str
    index_kind: str
    rebuilds_while_serving: bool
    image_size: int
    embedding_dim: int
    weights: str
    trained: bool
    backbone: str
    model_fingerprint: str
    threshold: float | None
    calibration: Threshold | None
    unsupported_note: str = ""
    unlike_check: bool = False

    @classmethod
    def of(
        cls,
        embedder: Embedder,
        index: IndexBackend,
        threshold: float | None,
        note: str = "",
        unlike_check: bool = False,
    ) -> GalleryInfo:
        """The facts of ``index`` served with ``embedder``; ``threshold``: the "good match" cut in force
        (:attr:`simlib.search.Searcher.threshold`, which prefers calibrated verdicts; None: none); ``note``:
        :meth:`simlib.search.Searcher.unsupported_note`; ``unlike_check``: a supported "unlike the gallery"
        check is in force."""
        config, calibration = embedder.config, index.manifest.threshold
        return cls(
            gallery_size=len(index),
            backend=index.backend,
            index_kind=index.kind,
            rebuilds_while_serving=index.rebuilds_while_serving,
            image_size=config.image_size,
            embedding_dim=config.embedding_dim,
            weights=config.weights,
            trained=config.trained,
            backbone=config.backbone,
            model_fingerprint=embedder.fingerprint,
            threshold=threshold,
            unsupported_note=note,
            calibration=calibration,
            unlike_check=unlike_check,
        )

    @property
    def untrained(self) -> bool:
        """Neither pretrained backbone weights nor simlib training: the model's features are random."""
        return self.weights == "none" and not self.trained

    def to_dict(self) -> dict[str, Any]:
        """As a JSON-ready dict (``calibration`` as stored in the manifest, or None)."""
        out = dataclasses.asdict(self)
        out["calibration"] = None if self.calibration is None else self.calibration.to_dict()
        return out
