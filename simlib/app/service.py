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
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from simlib.app.results import (
    AddResult,
    Explanation,
    SearchResult,
    TrainOutcome,
    collapse_threshold,
    filter_fields,
    gallery_roots,
    is_untrained,
    outcome_message,
    status_text,
    visitor_source,
)
from simlib.errors import SimlibError
from simlib.search.copies import CopyCut

DEFAULT_K = 5


MAX_K = 50


EXPLAIN_SIZE = 256  # the explanation's images are this large on their longer side


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
        from simlib.search.gallery import TRAINED_MODEL_DIR, app_folders, example_images, gallery_folders

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
            # JSON results name images relative to these folders (a gallery keeps its images when a model swaps)
            self.roots = gallery_roots(gallery_folders(searcher.index), self.upload_dir)
            self.labelled = len({r.label for r in searcher.index.records() if r.label and r.path}) >= 2
        self._fixed_collapse = None if collapse is None else float(collapse)
        self.collapse = self._model_collapse(searcher, info) if collapse is None else float(collapse)

    @staticmethod
    def _model_collapse(searcher, info: dict[str, Any]) -> float | CopyCut:
        """When two results are copies, for this model: its calibrated :class:`CopyCut` when the index has one,
        else :func:`collapse_threshold`'s fixed cosine."""
        return searcher.copy_cut or collapse_threshold(info)

    @property
    def collapse_text(self) -> str:
        """What "Merge near-duplicates" merges, in words."""
        if isinstance(self.collapse, CopyCut):
            how = " and look alike pixel by pixel" if self.collapse.needs_thumbnails else ""
            return f"results this model places as close as copies of each other{how} are counted in one caption"
        return f"a result at least {self.collapse:g} similar to a better one is counted in its caption"

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
        return self.describe().get("unsupported_note") or ""

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
        collapse: float | CopyCut | None = None,
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
            hits = searcher.query_vector(vector, k, filters or None, collapse_duplicates=collapse, image=image)
            info = self._describe()  # read with the hits: the status line matches them
        return SearchResult(hits, k, filters, collapse, time.perf_counter() - t0, info, self.roots)

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
            return searcher.score_ids(vector, [result_id], image=image)[0]

    def _embed(self, image: Any):
        """``(searcher, vector)``: the query embedded by the current model, outside the lock (a model is
        immutable, so queries overlap each other's forward passes)."""
        with self.lock:
            searcher = self.searcher
        return searcher, searcher.embedder.embed_images([image])[0]

    def _swap(self, searcher) -> None:
        """Serve ``searcher`` (a new model over the same gallery) from now on."""
        with self.lock:
            self.searcher = searcher
            if self._fixed_collapse is None:
                self.collapse = self._model_collapse(searcher, searcher.info().to_dict())
            where = f"{self.model_dir}" if self.model_dir is not None else "memory only"
            self.model_source = visitor_source(f"{where} (trained on this gallery in the app)", self.artifacts)

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

        from simlib.app.style import heat_legend
        from simlib.search.explain import heat_colours, overlay, similarity_maps

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
        low = float(min(query_heat.min(), result_heat.min())) if query_heat.size and result_heat.size else 0.0
        return Explanation(
            query=np.asarray(query),
            query_heat=overlay(query, query_heat),
            result=np.asarray(result),
            result_heat=overlay(result, result_heat),
            hit=hit,
            text=text,
            note=UNTRAINED_HEAT_NOTE if is_untrained(dataclasses.asdict(embedder.config)) else "",
            legend=heat_legend(heat_colours(low, 1.0), low),
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
        log: Callable[[str], None] | None = None,
    ) -> TrainOutcome:
        """Train a model on the gallery's labels and serve it: no restart, searches keep working meanwhile.

        Labels mode on a frozen backbone (its features computed once, then a small head trained for at most
        ``minutes`` of epochs), with the visitors' feedback verdicts on this model's results as triplets
        when there are any; then the gallery is re-indexed and re-calibrated with the new model, and the
        searcher is swapped under :attr:`lock`. With an artifacts folder the model is saved in
        ``<artifacts>/model`` and the index in its index folder, so the next start serves them. A model no
        better than the served one is dropped: a normal outcome, said in the message, not an error.

        Args:
            minutes: the epochs' time budget (decoding, backbone features, re-indexing and calibration
                come on top).
            epochs: most epochs (early stopping may end sooner).
            steps_per_epoch: batches per epoch (0: about one pass over the gallery).
            progress: called with ``(fraction done, what is happening)`` as it goes.
            require_better: keep the new model only if its validation Recall@1 beats the served model's
                (measured by the same run before training); else keep serving the old one.
            log: where the outcome line goes as well (the app's log; default: stderr).

        Raises:
            SimlibError: training is off, not possible for this gallery or model, or already running.
        """
        from simlib.train.retrain import monotone_progress, retrain_on_gallery  # lazy: Keras

        if not self.allow_train:
            raise SimlibError("training is off for this app (start it with --allow-train, on a trusted host)")
        if not self.can_train:
            raise SimlibError("nothing to train: the model is trained already, or the gallery has no labels")
        if not self._training.acquire(blocking=False):
            raise SimlibError("a model is being trained already: wait for it to finish")
        say = monotone_progress(progress or (lambda fraction, text: None))
        log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        log("training a model on this gallery (asked from the page)")
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
                feedback=self.store.path if self.store is not None else None,
            )
            log(done.summary())
            if done.kept:
                self._swap(done.searcher)
            say(1.0, "done")
            return TrainOutcome(
                outcome_message(done, saved=self.model_dir is not None), done.after, done.seconds, done.kept
            )
        finally:
            self._training.release()


def _progress(say: Callable[[float, str], None], epochs: int):
    """A Keras callback that reports each epoch to ``say`` (training is the first 80 % of the work)."""
    import keras

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            recall = (logs or {}).get("val_recall@1")
            extra = f", validation Recall@1 {recall:.2f}" if recall is not None else ""
            say(0.8 * (epoch + 1) / epochs, f"training: epoch {epoch + 1} of at most {epochs}{extra}")

    return Progress()
