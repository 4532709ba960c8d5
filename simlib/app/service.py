"""What the demo app does, without a web server: search, explain, score, feedback, add.

:class:`GalleryService` holds the searcher, the feedback store, the folder added images go to, the
app's options, and the one lock that makes it safe to serve from many threads: every read of the
index and every change to it happen under that lock, and images are embedded outside it (the
model is immutable), so queries overlap each other's forward passes but never see a half-updated
gallery. The Gradio page (:mod:`simlib.app.ui`) and the HTTP API call these methods and only
translate their results and errors; tests drive them directly.

Nothing heavy is imported at module level: TensorFlow loads with the searcher, Gradio not at all.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from simlib.errors import SimlibError

DEFAULT_K = 5
MAX_K = 50
# Filters shown for the product set; other galleries get their first attributes (and labels).
PREFERRED_FILTERS = ("masterCategory", "subCategory", "baseColour", "gender")
MAX_FILTERS = 4
# Duplicate collapse (see collapse_threshold): the library's default for a model that tells items apart...
COLLAPSE_AT = 0.97
# ...and the floor for an untrained backbone, which puts every pair of product photos above 0.93 cosine
# (nearest distinct neighbours: median 0.998, 99th percentile 0.9998) and JPEG re-encoded copies at
# 0.9998-0.99999 (measured at 64 px on the product set).
UNTRAINED_COLLAPSE_AT = 0.9998
EXPLAIN_SIZE = 256  # the explanation's images are this large on their longer side
VERDICT_LABELS = {"similar": "similar", "not_similar": "not similar"}
# Where a visitor's verdicts go and what uses them, said on the page under the feedback buttons.
FEEDBACK_WHERE = (
    "Verdicts are kept on this server (the app's `feedback/` folder), one per result of a query, the latest "
    "counting; training on this gallery (here or with `simlib train --feedback`) learns from them."
)
# One query keeps every core busy inside TensorFlow, so more parallel queries only add memory;
# one per core (up to 4) lets one query's upload, decoding and encoding overlap another's forward pass.
CONCURRENCY_LIMIT = max(1, min(4, os.cpu_count() or 1))
QUEUE_SIZE = 64  # waiting requests beyond this are turned away instead of piling up memory
# "Train a model on this gallery": a frozen backbone (its features computed once) and a small head, for at
# most this long; re-indexing and re-calibrating the gallery with the new model come on top.
TRAIN_MINUTES = 2.0
TRAIN_EPOCHS = 40
UNTRAINED_HEAT_NOTE = (
    "_This model is untrained: the maps show where its raw (random) features overlap, not what a trained "
    "model looks at._"
)


# ----------------------------------------------------------------------------- pure helpers
def filter_fields(
    attribute_values: Mapping[str, Sequence[str]],
    preferred: Sequence[str] = PREFERRED_FILTERS,
    max_fields: int = MAX_FILTERS,
) -> dict[str, list[str]]:
    """The attributes to offer as filters, with their values.

    Args:
        attribute_values: attribute -> distinct values, as from ``IndexBackend.attribute_values()``.
        preferred: attributes to show when present, in this order.
        max_fields: at most this many filters.

    Returns:
        The preferred attributes present, else the first ``max_fields`` attributes (labels included).
    """
    chosen = [a for a in preferred if a in attribute_values]
    if not chosen:
        chosen = sorted(attribute_values, key=lambda a: (a != "label", a))
    return {a: list(attribute_values[a]) for a in chosen[:max_fields]}


def is_untrained(info: Mapping[str, Any]) -> bool:
    """True when the model has neither pretrained backbone weights nor simlib training (``info``: a
    ``Searcher.info().to_dict()``)."""
    return info.get("weights") == "none" and not info.get("trained")


def collapse_threshold(info: Mapping[str, Any]) -> float:
    """The cosine above which the app merges a result into a better-ranked one, for this model.

    A copy must be far more alike than a merely good match, so the threshold is at least halfway
    from the calibrated "good match" score to 1 (with the untrained model's calibrated 0.9997 on
    the product set: 0.99987, above its closest distinct photos, under most re-encoded copies).
    Without a calibration: :data:`COLLAPSE_AT`, or :data:`UNTRAINED_COLLAPSE_AT` for an untrained
    backbone, whose scores are all crowded just under 1.

    Args:
        info: ``Searcher.info().to_dict()`` (``weights``, ``trained``, ``threshold``).
    """
    floor = UNTRAINED_COLLAPSE_AT if is_untrained(info) else COLLAPSE_AT
    calibrated = info.get("threshold")
    return floor if calibrated is None else max(floor, (1.0 + float(calibrated)) / 2)


def status_text(
    info: Mapping[str, Any],
    seconds: float | None = None,
    n_hits: int | None = None,
    merged: int | None = None,
    filters: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The status line: gallery size, model, backbone weights, which model this is and why (``info``'s
    ``model_source``, when known) and (after a query) the query time, the number of results, of
    near-duplicates merged, and the filters that were on."""
    weights = info.get("weights")
    weights = Path(weights).name if weights not in ("imagenet", "none", None) else weights
    model = "trained" if info.get("trained") else "untrained" if is_untrained(info) else "not fine-tuned"
    parts = [
        f"gallery: {info['gallery_size']:,} images ({info['index_kind']} index)",
        f"model: ResNet50, {info['image_size']} px, {info['embedding_dim']}-d, {model}",
        f"backbone weights: {weights}",
    ]
    if info.get("model_source"):
        parts.append(f"model from: {info['model_source']}")
    if seconds is not None:
        query = f"query: {seconds * 1000:.0f} ms" + (f", {n_hits} results" if n_hits is not None else "")
        if merged is not None:
            query += f", {merged} near-duplicate{'s' * (merged != 1)} merged"
        parts.append(query)
    if filters:
        parts.append("filters: " + "; ".join(f"{a} = {' or '.join(vs)}" for a, vs in filters.items()))
    return " · ".join(parts)


def visitor_source(source: str | None, root: str | os.PathLike | None) -> str | None:
    """Which model this is, as a visitor may read it: folders named relative to the artifacts folder (no
    server paths), without the list of places looked in."""
    if not source:
        return source
    if root is not None:
        root = str(Path(root).resolve())
        source = source.replace(root + os.sep, "").replace(f" in {root}", "").replace(root, ".")
    return re.sub(r" \(looked for [^)]*\)", "", source)


def calibration_note(calibration: Mapping[str, Any] | None) -> str:
    """One plain line when the calibrated threshold cannot be trusted (``Threshold.to_dict()``), else ""
    (:meth:`simlib.index.Threshold.unsupported_note`)."""
    from simlib.index import Threshold

    return Threshold.from_dict(calibration).unsupported_note() if calibration else ""


def hit_record(hit) -> dict[str, Any]:
    """A hit for the structured (JSON) output: rank, id, score, label, gallery_path, attributes, duplicates, weak.

    The file is under ``gallery_path``, not ``path``: gradio_client takes any dict with a "path"
    key for a file to download and would replace the whole record with a local copy.
    """
    d = hit.to_dict()
    d["gallery_path"] = d.pop("path")
    return d


def gallery_id(value: Any) -> int:
    """A result id as a request sends it (int, float or text), checked to be a whole number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer():
        raise SimlibError(f"result_id must be a gallery id (a whole number, as in the results' 'id'), not {value!r}")
    return int(number)


def display_image(image: Any):
    """The image as RGB, scaled to :data:`EXPLAIN_SIZE` pixels on its longer side (up or down), aspect kept.

    A 60x80 catalogue photo is enlarged so its heat map can be read; a phone photo is shrunk
    instead of being heat-mapped and sent back whole.
    """
    from PIL import Image

    from simlib.data import open_image

    img = open_image(image)
    scale = EXPLAIN_SIZE / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS) if size != img.size else img


def feedback_message(entry, rank: int | None = None) -> str:
    """The thanks for a stored verdict (:class:`~simlib.search.feedback.Feedback`), naming the result by rank."""
    which = f"result #{rank}" if rank else f"gallery image {entry.result_id}"
    if entry.verdict not in VERDICT_LABELS:
        return f"Your verdict on {which} is taken back."
    return f"Your verdict on {which}: **{VERDICT_LABELS[entry.verdict]}** (change it any time, or undo it)."


def verdict_message(verdict: str | None, rank: int | None = None) -> str:
    """What the page says about the current verdict on a clicked result ("" when there is none)."""
    which = f"result #{rank}" if rank else "this result"
    return f"Your verdict on {which}: **{VERDICT_LABELS[verdict]}**." if verdict in VERDICT_LABELS else ""


# ----------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class SearchResult:
    """One query's answer: the hits and what the page and the API show of them.

    Attributes:
        hits: the results, best first (``Hit.weak`` set from the calibrated threshold).
        k: the number asked for.
        filters: attribute -> allowed values, as applied.
        collapse: the duplicate-collapse threshold used (None: off).
        seconds: embedding plus search time.
        info: ``Searcher.info().to_dict()`` read together with the hits (gallery size, model, threshold).
    """

    hits: list
    k: int
    filters: dict[str, list[str]]
    collapse: float | None
    seconds: float
    info: dict[str, Any]

    @property
    def threshold(self) -> float | None:
        """The calibrated "good match" score (None: not calibrated)."""
        return self.info["threshold"]

    @property
    def merged(self) -> int | None:
        """Near-duplicates merged into the hits (None when collapse was off)."""
        return None if self.collapse is None else sum(h.duplicates for h in self.hits)

    @property
    def no_good_match(self) -> bool | None:
        """True when no hit clears the calibrated threshold; None without a calibration."""
        from simlib.search import no_good_match

        return None if self.threshold is None else no_good_match(self.hits)

    @property
    def gallery(self) -> list[tuple[str, str]]:
        """``[(image path, caption)]`` for the hits that have a file (``Hit.caption``)."""
        return [(h.path, h.caption()) for h in self.hits if h.path]

    @property
    def status(self) -> str:
        """The status line after this query."""
        return status_text(self.info, self.seconds, len(self.hits), self.merged, self.filters)

    def calibration_note(self) -> str:
        """The line under the results when the model cannot support its calibration (:func:`calibration_note`)."""
        return calibration_note(self.info.get("calibration"))

    def banner(self) -> str:
        """The "No good match" banner (Markdown), or "" when it does not apply (never for an unsupported
        calibration: :attr:`threshold` is then None)."""
        if not self.no_good_match:
            return ""
        best = f" (best score {self.hits[0].score:.4f})" if self.hits else ""
        return (
            f"### No good match\nNo gallery image reaches the calibrated similarity threshold "
            f"{self.threshold:.4f}{best}: the results below are only the closest images, marked weak."
        )

    def to_json(self) -> dict[str, Any]:
        """``{"k", "filters", "query_ms", "collapse", "merged", "threshold", "no_good_match", "hits"}``
        (each hit as :func:`hit_record`): the API's structured results."""
        return {
            "k": self.k,
            "filters": self.filters,
            "query_ms": round(self.seconds * 1000, 1),
            "collapse": self.collapse,
            "merged": self.merged,
            "threshold": self.threshold,
            "no_good_match": self.no_good_match,
            "hits": [hit_record(h) for h in self.hits],
        }

    def outputs(self) -> tuple[list[tuple[str, str]], dict[str, Any], str]:
        """``(gallery, results, status)``: what the ``/search`` endpoint returns."""
        return self.gallery, self.to_json(), self.status


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Why a gallery image is similar to the query.

    Attributes:
        query, result: the two images as RGB uint8 arrays, :data:`EXPLAIN_SIZE` px on the longer side.
        query_heat, result_heat: the same with their similarity heat maps blended over them
            (:func:`simlib.search.explain.overlay`).
        hit: the result scored against the query (``id``, ``score``, ``weak``, ``label``).
        text: one Markdown line for the page.
        note: for an untrained model, what its heat maps show (raw feature overlap), else "".
    """

    query: Any
    query_heat: Any
    result: Any
    result_heat: Any
    hit: Any
    text: str
    note: str = ""

    def details(self) -> dict[str, Any]:
        """``{id, score, weak, label}``: what the ``/explain`` endpoint returns beside the heat maps."""
        return {"id": self.hit.id, "score": self.hit.score, "weak": self.hit.weak, "label": self.hit.label}


class AddResult(NamedTuple):
    """What adding an image did: a message for the page and the new ids (empty when nothing was added)."""

    message: str
    ids: list[int]


# ----------------------------------------------------------------------------- the service
class GalleryService:
    """The app's logic over one searcher: ``GalleryService(searcher, artifacts=DIR).search(image, k)``.

    Thread-safe: the index is read and changed only under :attr:`lock`.
    """

    def __init__(
        self,
        searcher,
        *,
        artifacts: str | os.PathLike | None = None,
        allow_add: bool = False,
        collapse: float | None = None,
        examples: Sequence[str] | None = None,
        allow_train: bool = False,
        model_source: str | None = None,
    ) -> None:
        """Serve ``searcher``.

        Args:
            searcher: a :class:`simlib.search.Searcher`.
            artifacts: the artifacts (or index) folder the searcher was opened from: feedback goes to
                its ``feedback/``, added images to its ``gallery_uploads/`` and the index is saved back
                to its index folder (see :func:`simlib.search.gallery.app_folders`). None: no feedback, no adding.
            allow_add: let :meth:`add` grow the gallery (needs ``artifacts``).
            collapse: the duplicate-collapse threshold (default: :func:`collapse_threshold` for the model).
            examples: example query images (default: a few gallery images of different classes).
            allow_train: let :meth:`train` train a model on the gallery and switch to it (it keeps the
                host's CPU busy for minutes: the app turns it off on share links and public addresses).
            model_source: which model this is and why, for the status line
                (:func:`simlib.search.gallery.model_source`).
        """
        from simlib.search.feedback import FeedbackStore
        from simlib.search.gallery import TRAINED_MODEL_DIR, app_folders, example_images

        if allow_add and artifacts is None:
            raise SimlibError("adding to the gallery needs the artifacts folder to save the index in")
        folders = app_folders(artifacts) if artifacts is not None else None
        self.searcher = searcher
        # Searcher is not thread-safe while the gallery changes: every index read and every change hold this.
        self.lock = threading.Lock()
        self.artifacts = None if artifacts is None else Path(artifacts)
        self.index_dir = folders["index"] if folders else None
        self.upload_dir = folders["uploads"] if folders else None
        self.store = FeedbackStore(folders["feedback"]) if folders else None
        self.allow_add = allow_add
        self.allow_train = allow_train
        self.model_source = visitor_source(model_source, folders["root"] if folders else None)
        self.model_dir = folders["root"] / TRAINED_MODEL_DIR if folders else None  # where train() saves
        self._training = threading.Lock()  # one training at a time
        with self.lock:
            info = searcher.info().to_dict()
            self.filter_choices = filter_fields(searcher.index.attribute_values())
            self.examples = example_images(searcher.index) if examples is None else list(examples)
            self.labelled = len({r.label for r in searcher.index.records() if r.label and r.path}) >= 2
        self._fixed_collapse = None if collapse is None else float(collapse)
        self.collapse = collapse_threshold(info) if collapse is None else float(collapse)

    # ------------------------------------------------------------------ facts
    def describe(self) -> dict[str, Any]:
        """``Searcher.info().to_dict()`` (gallery size, index kind, model settings, calibrated threshold) plus
        ``model_source`` and ``calibration`` (the stored ``Threshold`` as a dict, or None)."""
        with self.lock:
            return self._describe()

    def _describe(self) -> dict[str, Any]:
        # the caller holds the lock; "calibration" is the stored Threshold as a dict, or None
        return {**self.searcher.info().to_dict(), "model_source": self.model_source}

    def calibration_note(self) -> str:
        """The line shown under the results when the model cannot support its calibration ("" otherwise)."""
        return calibration_note(self.describe()["calibration"])

    @property
    def can_train(self) -> bool:
        """True when the page offers "Train a model on this gallery": allowed, the model untrained, the
        gallery labelled (two classes or more) and a FAISS index (re-built in memory, then saved)."""
        info = self.describe()
        return self.allow_train and self.labelled and is_untrained(info) and info["rebuilds_while_serving"]

    def status(self) -> str:
        """The status line before any query."""
        return status_text(self.describe())

    @property
    def untrained(self) -> bool:
        """True when the model has neither pretrained backbone weights nor training (the page says so)."""
        return is_untrained(self.describe())

    @property
    def takes_feedback(self) -> bool:
        """True when verdicts can be stored (the service has an artifacts folder)."""
        return self.store is not None

    def warm_up(self) -> None:
        """Run one query now, so the model is traced before the first visitor's query, not during it."""
        import numpy as np

        size = self.searcher.embedder.image_size
        self.search(np.full((size, size, 3), 255, np.uint8), 1)

    # ------------------------------------------------------------------ actions
    def search(
        self,
        image: Any,
        k: int = DEFAULT_K,
        filters: Mapping[str, Sequence[str]] | None = None,
        collapse: float | None = None,
    ) -> SearchResult:
        """The ``k`` gallery images most similar to ``image``.

        Args:
            image: a file path, bytes, PIL image or array (None: no image yet).
            k: number of results (1 to :data:`MAX_K`).
            filters: attribute -> allowed value(s), applied inside the search.
            collapse: merge results at least this similar to a better-ranked one (None: off; the
                app's default is :attr:`collapse`).

        Raises:
            SimlibError: no image, a bad image or a bad ``k``, with a message for the user.
        """
        if image is None:
            raise SimlibError("no query image: upload a file, take a webcam picture or paste one first")
        k = int(k)
        if not 1 <= k <= MAX_K:
            raise SimlibError(f"k must be between 1 and {MAX_K}, not {k}")
        filters = {a: [str(v) for v in ([vs] if isinstance(vs, str) else vs)] for a, vs in (filters or {}).items()}
        t0 = time.perf_counter()
        searcher, vector = self._embed(image)
        with self.lock:
            searcher, vector = self._same_model(searcher, vector, image)
            hits = searcher.query_vector(vector, k, filters or None, collapse_duplicates=collapse)
            info = self._describe()  # read with the hits: the status line matches them
        return SearchResult(hits, k, filters, collapse, time.perf_counter() - t0, info)

    def score(self, image: Any, result_id: Any):
        """A gallery image scored against the query: a :class:`simlib.search.Hit` (rank 0) with its
        cosine similarity and weak flag, computed here (a request cannot plant a score).

        Raises:
            SimlibError: a bad image, or an id that is not a whole number or not in the gallery.
        """
        result_id = gallery_id(result_id)
        searcher, vector = self._embed(image)
        with self.lock:
            searcher, vector = self._same_model(searcher, vector, image)
            return searcher.score_ids(vector, [result_id])[0]

    def _embed(self, image: Any):
        """``(searcher, vector)``: the query embedded by the current model, outside the lock (a model is
        immutable, so queries overlap each other's forward passes)."""
        with self.lock:
            searcher = self.searcher
        return searcher, searcher.embedder.embed_images([image])[0]

    def _same_model(self, searcher, vector, image: Any):
        """Under the lock: ``(searcher, vector)`` again if :meth:`train` swapped the model meanwhile
        (a vector of one model must never query another model's index)."""
        if searcher is self.searcher:
            return searcher, vector
        return self.searcher, self.searcher.embedder.embed_images([image])[0]

    def explain(self, image: Any, result_id: Any, rank: int | None = None) -> Explanation:
        """Why a gallery image is similar to the query: both images with their similarity heat maps.

        Args:
            image: the query image (path, bytes, PIL image or array).
            result_id: the result's gallery id (``Hit.id``).
            rank: the result's rank, for the text (None: not said).

        Raises:
            SimlibError: no image, a bad image, or an id that is not in the gallery.
        """
        import numpy as np

        from simlib.search.explain import overlay, similarity_maps

        if image is None:
            raise SimlibError("no query image: search first, then click a result")
        query = display_image(image)
        hit = self.score(image, result_id)
        if not hit.path:
            raise SimlibError(f"gallery image {hit.id} has no file to show")
        result = display_image(hit.path)
        with self.lock:
            embedder = self.searcher.embedder
        query_heat, result_heat = similarity_maps(embedder, query, result)
        text = (f"**#{rank}** · " if rank else "") + f"cosine similarity **{hit.score:.4f}**"
        text += f" · {hit.label}" if hit.label else ""
        if hit.weak:
            text += f" · **weak** (under the calibrated {self.describe()['threshold']:.4f})"
        return Explanation(
            query=np.asarray(query),
            query_heat=overlay(query, query_heat),
            result=np.asarray(result),
            result_heat=overlay(result, result_heat),
            hit=hit,
            text=text,
            note=UNTRAINED_HEAT_NOTE if is_untrained(dataclasses.asdict(embedder.config)) else "",
        )

    def feedback(self, image: Any, result_id: Any, verdict: str):
        """Store a verdict on a result (:meth:`simlib.search.feedback.FeedbackStore.add_hit`) with the score
        recomputed here and the model's fingerprint, so training can keep feedback on this model's results.

        Returns:
            The stored :class:`simlib.search.feedback.Feedback`.

        Raises:
            SimlibError: no feedback store, no image, a bad image, an unknown id or verdict.
        """
        from simlib.search.feedback import CLEARED, VERDICTS

        if self.store is None:
            raise SimlibError("this app keeps no feedback (it was started without an artifacts folder)")
        if image is None:
            raise SimlibError("no query image: search first, then mark a result")
        if verdict not in (*VERDICTS, CLEARED):
            raise SimlibError(f"verdict must be one of {', '.join((*VERDICTS, CLEARED))}, not {verdict!r}")
        hit = self.score(image, result_id)
        return self.store.add_hit(image, hit, verdict, self.searcher.fingerprint)

    def verdict(self, image: Any, result_id: Any) -> str | None:
        """The current verdict on a result of this query ("similar", "not_similar"), or None (none given, or
        no feedback store)."""
        if self.store is None or image is None:
            return None
        return self.store.verdict(image, gallery_id(result_id))

    def add(self, image: Any) -> AddResult:
        """Add the query image to the gallery and save the index, without rebuilding it.

        The image is stored in :attr:`upload_dir` (:func:`simlib.storage.store_png`: PNG named by
        its pixels' hash, metadata dropped), embedded with :meth:`Searcher.add_images`, and the
        index saved back with :meth:`Searcher.save_updated` (its model files hard-linked, not
        re-serialised). Searches wait for the add, so none sees a half-updated gallery.

        Raises:
            SimlibError: adding is off, no image, or a bad image.
        """
        from simlib.storage import store_png

        if not self.allow_add:
            raise SimlibError("adding to the gallery is off (start the app with --allow-add)")
        if image is None:
            raise SimlibError("no image to add: upload a file, take a webcam picture or paste one first")
        path = store_png(image, self.upload_dir)
        with self.lock:
            added, skipped = self.searcher.add_images([path])
            if added:
                self.searcher.save_updated(self.index_dir)
            size = len(self.searcher.index)
        if not added:
            return AddResult(f"Not added: {next(iter(skipped.values()), 'unreadable')}.", [])
        return AddResult(f"Added to the gallery as image {added[0]} (the gallery now holds {size:,} images).", added)

    # ------------------------------------------------------------------ training
    def train(
        self,
        *,
        minutes: float = TRAIN_MINUTES,
        epochs: int = TRAIN_EPOCHS,
        steps_per_epoch: int = 0,
        progress: Callable[[float, str], None] | None = None,
        require_better: bool = True,
    ) -> TrainOutcome:
        """Train a model on the gallery's labels and serve it: no restart, searches keep working meanwhile.

        Labels mode on a frozen backbone (its features computed once, a small head trained for at most
        ``minutes``); then the gallery is re-indexed and re-calibrated with the new model, and the
        searcher is swapped under :attr:`lock`. With an artifacts folder the model is saved in
        ``<artifacts>/model`` and the index in its index folder, so the next start serves them.

        Args:
            minutes: training time budget (re-indexing and calibration come on top).
            epochs: most epochs (early stopping may end sooner).
            steps_per_epoch: batches per epoch (0: about one pass over the gallery).
            progress: called with ``(fraction done, what is happening)`` as it goes.
            require_better: keep the new model only if its validation Recall@1 beats the served model's
                (measured by the same run before training); else raise and keep serving the old one.

        Raises:
            SimlibError: training is off, not possible for this gallery or model, or already running.
        """
        from simlib.train import retrain_on_gallery

        if not self.allow_train:
            raise SimlibError("training is off for this app (start it with --allow-train, on a trusted host)")
        if not self.can_train:
            raise SimlibError("nothing to train: the model is trained already, or the gallery has no labels")
        if not self._training.acquire(blocking=False):
            raise SimlibError("a model is being trained already: wait for it to finish")
        say = progress or (lambda fraction, text: None)
        try:
            with self.lock:
                old = self.searcher
            done = retrain_on_gallery(
                old,
                minutes=minutes,
                epochs=epochs,
                steps_per_epoch=steps_per_epoch,
                callbacks=[_progress(say, epochs)],
                require_better=require_better,
                model_dir=self.model_dir,
                index_dir=self.index_dir,
                lock=self.lock,
                progress=say,
            )
            with self.lock:
                self.searcher = done.searcher
                info = done.searcher.info().to_dict()
                if self._fixed_collapse is None:
                    self.collapse = collapse_threshold(info)
                where = f"{self.model_dir}" if self.model_dir is not None else "memory only"
                self.model_source = visitor_source(f"{where} (trained on this gallery in the app)", self.artifacts)
            say(1.0, "done")
            return TrainOutcome(
                f"Trained in {done.seconds:.0f} s (validation Recall@1 {done.before:.2f} -> {done.after:.2f}): the "
                "gallery is re-indexed and re-calibrated and the app now serves the new model"
                + (f" (saved in {self.model_dir}: the next start uses it)." if self.model_dir else "."),
                done.after,
                done.seconds,
            )
        finally:
            self._training.release()


class TrainOutcome(NamedTuple):
    """What :meth:`GalleryService.train` did: a message for the page, the validation Recall@1, the seconds."""

    message: str
    val_recall: float
    seconds: float


def _progress(say: Callable[[float, str], None], epochs: int):
    """A Keras callback that reports each epoch to ``say`` (training is the first 80 % of the work)."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            recall = (logs or {}).get("val_recall@1")
            extra = f", validation Recall@1 {recall:.2f}" if recall is not None else ""
            say(0.8 * (epoch + 1) / epochs, f"training: epoch {epoch + 1} of at most {epochs}{extra}")

    return Progress()
