"""The gallery an app serves: build it, open its cached index, or build and cache it once.

A served gallery is an index folder (written by :meth:`simlib.search.Searcher.save`, so it
carries its own model) inside an artifacts folder. :func:`build_gallery` is the one way it is built
(embed, index, calibrate, save). :func:`open_gallery` finds it, checks it against what the user
asked for (``--data``, ``--model``, ``--weights``, ``--image-size``) and re-indexes only when
something differs, so the second start of an app is fast.
:func:`gallery_folders` names the folders that hold the gallery's images: the only files an
app needs to serve.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from simlib.config import IndexConfig, ModelConfig
from simlib.data import ImageTable, cache_dir, default_data_spec, load_dataset, materialize
from simlib.errors import SimlibError
from simlib.index import DEFAULT_BACKEND, MANIFEST_FILE, IndexBackend, backend_class, open_index, read_manifest
from simlib.model import MODEL_FILE, Embedder, SavedModel, open_embedder, resolve_weights, saved_model
from simlib.search.calibrate import calibrate_threshold
from simlib.search.confidence import calibrate_verdicts
from simlib.search.searcher import Searcher
from simlib.search.tables import index_table

INDEX_SUBDIR = "index"
TRAINED_MODEL_DIR = "model"  # where `simlib train` (and the app's "Train" button) save a trained model
# Trained models an app looks for in its artifacts folder: its own, then the course's (notebook 03 trains
# ``artifacts/course/model_labels``; the notebooks run in notebooks/ and write to ../artifacts/course).
# ``model_labels`` itself: an app started on the course's folder (``--artifacts artifacts/course``).
TRAINED_MODEL_DIRS = (TRAINED_MODEL_DIR, "course/model_labels", "model_labels")
FEEDBACK_SUBDIR = "feedback"  # the app's feedback store
UPLOADS_SUBDIR = "gallery_uploads"  # images the app added to the gallery (the only artifacts it serves)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    return None


def index_dir_in(artifacts: str | os.PathLike) -> Path:
    """The index folder of an artifacts folder: the folder itself when it is an index, else ``<it>/index``."""
    artifacts = Path(artifacts)
    return artifacts if (artifacts / MANIFEST_FILE).is_file() else artifacts / INDEX_SUBDIR


def _trained(model_dir: Path) -> SavedModel | None:
    """The trained model saved in ``model_dir`` (None: no model there, or not trained)."""
    found = saved_model(model_dir)
    return found if found is not None and found.trained else None


def trained_models(artifacts: str | os.PathLike) -> list[Path]:
    """The trained model folders under the artifacts folder (:data:`TRAINED_MODEL_DIRS`), newest first.

    Cheap: only each folder's ``config.json`` is read (no TensorFlow).
    """
    root = app_folders(artifacts)["root"]
    found = [m for m in (_trained(root / d) for d in TRAINED_MODEL_DIRS) if m is not None]
    return [m.directory for m in sorted(found, key=lambda m: m.saved_at, reverse=True)]


def model_source(
    searcher: Searcher, artifacts: str | os.PathLike | None = None, model_dir: str | os.PathLike | None = None
) -> str:
    """Which model ``searcher`` serves and why, in one clause for the app's status line.

    Args:
        searcher: the opened :class:`~simlib.search.Searcher`.
        artifacts: the artifacts folder it was opened from (None: not known).
        model_dir: the ``--model`` given, if any.
    """
    if model_dir is not None:
        return f"{model_dir} (given with --model)"
    fingerprint = searcher.fingerprint
    for found in trained_models(artifacts) if artifacts is not None else []:
        saved = saved_model(found)
        if saved is not None and saved.fingerprint == fingerprint:
            return f"{found} (the newest trained model in the artifacts folder)"
    cfg = searcher.embedder.config
    if cfg.trained:
        return "the index's own trained model"
    looked = ", ".join(f"{d}/" for d in TRAINED_MODEL_DIRS)
    where = f" in {app_folders(artifacts)['root']}" if artifacts is not None else ""
    return f"no trained model{where} (looked for {looked}): a fresh model, backbone weights {cfg.weights}"


# ----------------------------------------------------------------------------- building a gallery
@dataclasses.dataclass(frozen=True)
class GalleryBuild:
    """What :func:`build_gallery` made.

    Attributes:
        searcher: the new searcher (its index calibrated when the table was labelled, and saved when asked).
        skipped: table row -> why that image could not be read (its path is in the manifest's ``skipped_paths``).
        seconds: embedding and indexing time (calibration and saving not included).
    """

    searcher: Searcher
    skipped: dict[int, str]
    seconds: float


def build_gallery(
    embedder: Embedder,
    table: ImageTable,
    *,
    config: IndexConfig | None = None,
    backend: str = DEFAULT_BACKEND,
    location: Mapping[str, str] | None = None,
    calibrate: bool = True,
    index_dir: str | os.PathLike | None = None,
    progress: bool | str = False,
    log: Callable[[str], None] = _quiet,
) -> GalleryBuild:
    """Index a gallery: embed ``table``, index it (unreadable images skipped and recorded), calibrate its
    "no good match" threshold when the table is labelled, and save the index folder.

    The one way a served gallery is built: by :func:`open_gallery` and by
    :func:`simlib.train.retrain.retrain_on_gallery`.

    Args:
        embedder: the model.
        table: the images (with files: an app shows them).
        config: index kind and parameters (default: ``auto``).
        backend: the index's backend (see :data:`simlib.index.BACKENDS`).
        location: where a backend that lives elsewhere puts it (:meth:`simlib.index.IndexBackend.location`:
            ``uri``, ``collection``).
        calibrate: calibrate a labelled table's threshold (:func:`~simlib.search.calibrate.calibrate_threshold`:
            20 % of the images query the rest); a gallery too small to calibrate is only noted.
        index_dir: the index folder to save in, atomically (None: not saved).
        progress: show a progress bar while embedding (a string: its label).
        log: where the one-line notes go (skipped images, the calibration).
    """
    t0 = time.perf_counter()
    searcher, result = Searcher.from_table(
        embedder, table, config, progress=progress, backend=backend, **dict(location or {})
    )
    seconds = time.perf_counter() - t0
    for row, reason in list(result.skipped.items())[:5]:
        log(f"skipped {table.source(row)}: {reason}")
    if len(result.skipped) > 5:
        log(f"... and {len(result.skipped) - 5} more unreadable images skipped")
    if calibrate and table.has_labels:
        _calibrate(searcher, log)
    if calibrate:
        calibrate_verdicts_of(searcher, log)
    if index_dir is not None:
        searcher.save(index_dir)
    return GalleryBuild(searcher, dict(result.skipped), seconds)


def _calibrate(searcher: Searcher, log: Callable[[str], None]) -> None:
    """Calibrate the "no good match" threshold on the gallery's own labels; a gallery too small is only noted."""
    t0 = time.perf_counter()
    try:
        threshold = calibrate_threshold(searcher)
    except SimlibError as e:
        log(f"no 'no good match' threshold: {e}")
        return
    searcher.set_threshold(threshold)
    log(f"calibrated the 'no good match' threshold: {threshold.summary()}, {time.perf_counter() - t0:.1f} s")
    if threshold.not_reached_note():
        log(f"warning: {threshold.not_reached_note()}")
    # what the model cannot support is said once, by the verdicts in force (calibrate_verdicts_of), not here


def calibrate_verdicts_of(searcher: Searcher, log: Callable[[str], None]) -> None:
    """Calibrate how sure a match is (:func:`~simlib.search.confidence.calibrate_verdicts`: the "no good
    match" cut and the match probability from a labelled gallery's validation queries, the copy cut from
    any gallery) and keep it with the index; a gallery too small is only noted."""
    t0 = time.perf_counter()
    try:
        verdicts = calibrate_verdicts(searcher)
    except SimlibError as e:
        log(f"no calibrated verdicts: {e}")
        return
    searcher.set_verdicts(verdicts)
    log(f"calibrated how sure a match is ({time.perf_counter() - t0:.1f} s): {verdicts.summary()}")
    if searcher.unsupported_note():
        log(searcher.unsupported_note())


# ----------------------------------------------------------------------------- opening the served gallery
def _same_images(index: IndexBackend, table: ImageTable) -> bool:
    indexed = {r.path for r in index.records()}
    wanted = {str(Path(p).resolve()) for p in table.paths or ()}
    # Images that failed to decode at indexing time are absent from the index: tolerate them.
    skipped = set(index.manifest.skipped_paths)
    return indexed <= wanted and wanted - indexed <= skipped


def open_gallery(
    artifacts: str | os.PathLike = "artifacts",
    *,
    data: str | None = None,
    model_dir: str | os.PathLike | None = None,
    weights: str | None = None,
    image_size: int | None = None,
    embedding_dim: int | None = None,
    label_column: str = "articleType",
    progress: bool = True,
    calibrate: bool = True,
    log: Callable[[str], None] = _stderr,
    backend: str | None = None,
    uri: str | None = None,
) -> tuple[Searcher, str]:
    """Open the searcher an app serves, building and caching its index when needed.

    The index folder is ``artifacts`` itself when it holds an index, else ``artifacts/index``.
    It is loaded as it is unless the arguments ask for something else; then the gallery is
    (re-)indexed with a progress bar and saved there, atomically, for the next start
    (:func:`build_gallery`).

    Args:
        artifacts: the artifacts folder.
        data: the gallery to serve (a folder or "fashion-mnist"); default: the cached index's own
            images, or :func:`simlib.data.default_data_spec` when there is no index yet.
        model_dir: a trained model to serve; the index is re-built when it was made by another
            model. Default: the newest trained model among the index's own and those under the
            artifacts folder (:data:`TRAINED_MODEL_DIRS`: ``model/``, the course's
            ``course/model_labels``), re-indexing with it when it is not the index's; else the index's
            own model; else a fresh model from ``weights`` and ``image_size``.
        weights: backbone weights for a fresh model ("auto", "imagenet", "none" or a path);
            given explicitly and different from the cached model's, it forces a fresh model.
        image_size: input side for a fresh model; given and different from the cached model's,
            it forces a fresh model.
        embedding_dim: a fresh model's embedding size (default 128); a cached model keeps its own.
        label_column: product layout: the ``styles.csv`` column used as the label.
        progress: show a progress bar while indexing.
        calibrate: after indexing a labelled gallery, calibrate its "no good match" threshold and
            save it with the index. A loaded index keeps the threshold it has (``simlib calibrate``).
        log: where the one-line notes go (default: stderr).
        backend: the backend of a new index ("faiss" or "milvus"); default: the cached index's
            own, else FAISS. Given and different from the cached index's, it forces a re-index.
        uri: a backend that lives at an address (Milvus): where a new index goes (a ``.db`` path for
            Milvus Lite, or ``http://host:19530``); default: the cached index's own. A cached index of
            such a backend is opened at this address when given.

    Returns:
        ``(searcher, note)``: the :class:`~simlib.search.Searcher` and one line saying what was done.
    """
    index_dir = index_dir_in(artifacts)
    reasons: list[str] = []
    index = _open_cached(index_dir, backend, uri, reasons)
    model = _choose_model(
        index, index_dir, artifacts, model_dir, weights, image_size, embedding_dim, log=log, reasons=reasons
    )
    table = _choose_images(index, index_dir, data, label_column, reasons)
    if not reasons:
        searcher = Searcher(model, index)  # type: ignore[arg-type]
        note = f"loaded {index_dir} ({len(index):,} images)"  # type: ignore[arg-type]
        if searcher.threshold is None:
            note += f"; no 'no good match' threshold: run `simlib calibrate --index {index_dir}` to add one"
        return searcher, note

    return _rebuild(index, index_dir, model, table, reasons, backend=backend, uri=uri, calibrate=calibrate,
                    progress=progress, log=log)  # fmt: skip


def _rebuild(
    index: IndexBackend | None,
    index_dir: Path,
    model: Embedder,
    table: ImageTable | None,
    reasons: list[str],
    *,
    backend: str | None,
    uri: str | None,
    calibrate: bool,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[Searcher, str]:
    """Index ``table`` (default: the cached index's own images) with ``model`` into ``index_dir``, the cached
    index's kind and place unless ``backend``/``uri`` say otherwise; returns the searcher and the note."""
    if table is None:
        table = index_table(index)  # type: ignore[arg-type]
    kind = index.config.kind if index is not None else "auto"
    backend, location = _new_location(index, backend, uri)
    if index is not None:
        index.close()  # a database file (Milvus Lite) may take the rebuilt collection
    log(f"indexing {len(table):,} images of {table.name}: {'; '.join(reasons)}")
    built = build_gallery(
        model,
        table,
        config=IndexConfig(kind=kind),
        backend=backend,
        location=location,
        calibrate=calibrate,
        index_dir=index_dir,
        progress=progress and "indexing",
        log=log,
    )
    note = (
        f"indexed {len(built.searcher.index):,} images in {built.seconds:.1f} s (skipped {len(built.skipped)}), "
        f"cached in {index_dir}"
    )
    return built.searcher, note


def _open_cached(index_dir: Path, backend: str | None, uri: str | None, reasons: list[str]) -> IndexBackend | None:
    """The cached index in ``index_dir`` (None: none yet); a reason to rebuild when it is not of ``backend``."""
    if not (index_dir / MANIFEST_FILE).is_file():
        return None
    cached = read_manifest(index_dir).backend
    same = backend in (None, cached)
    index = open_index(index_dir, uri=uri if same and backend_class(cached).has_location else None)
    if not same:
        reasons.append(f"the index in {index_dir} is a {index.backend} index, not {backend}")
    return index


def _choose_model(
    index: IndexBackend | None,
    index_dir: Path,
    artifacts: str | os.PathLike,
    model_dir: str | os.PathLike | None,
    weights: str | None,
    image_size: int | None,
    embedding_dim: int | None,
    *,
    log: Callable[[str], None],
    reasons: list[str],
) -> Embedder:
    """The model to serve: ``--model``, else the newest trained one (the index's own or one under the
    artifacts folder), else the index's own, else a fresh one; reasons to rebuild are appended to ``reasons``."""
    if model_dir is not None:
        model = open_embedder(model_dir, image_size=image_size)
        if index is not None and index.manifest.model_fingerprint != model.fingerprint:
            reasons.append(f"the index in {index_dir} was built by another model than {model_dir}")
        return model
    model = _newest_trained(index, index_dir, artifacts, log=log, reasons=reasons)
    if model is not None and (weights is not None or image_size is not None):
        cfg = model.config
        wanted_weights = resolve_weights(weights) if weights is not None else cfg.weights
        wanted_size = image_size or cfg.image_size
        if (wanted_weights, wanted_size) != (cfg.weights, cfg.image_size):
            reasons.append(
                f"the cached model is {cfg.image_size} px with weights {cfg.weights}, "
                f"not {wanted_size} px with weights {wanted_weights}"
            )
            fresh = ModelConfig(
                image_size=wanted_size, embedding_dim=embedding_dim or cfg.embedding_dim, weights=wanted_weights
            )
            return Embedder.build(fresh)
    if model is None:
        return open_embedder(image_size=image_size, weights=weights or "auto", embedding_dim=embedding_dim)
    return model


def _newest_trained(
    index: IndexBackend | None,
    index_dir: Path,
    artifacts: str | os.PathLike,
    *,
    log: Callable[[str], None],
    reasons: list[str],
) -> Embedder | None:
    """The newest of the index's own model and the trained ones under the artifacts folder (None: neither)."""
    own = Embedder.load(index_dir / index.manifest.model_dir) if index is not None else None
    found = trained_models(artifacts)
    own_time = (index_dir / MANIFEST_FILE).stat().st_mtime if own is not None and own.config.trained else None
    newest = found[0] if found else None
    if newest is None or (own_time is not None and (newest / MODEL_FILE).stat().st_mtime <= own_time):
        return own
    candidate = Embedder.load(newest)
    if own is not None and own.fingerprint == candidate.fingerprint:
        return own
    log(f"using the trained model in {newest}")
    if index is not None:
        reasons.append(f"a trained model was found in {newest}")
    return candidate


def _choose_images(
    index: IndexBackend | None, index_dir: Path, data: str | None, label_column: str, reasons: list[str]
) -> ImageTable | None:
    """The images to serve: ``--data``, else (None) the index's own, else the default data."""
    if data is None and index is not None:
        return None
    spec = data or default_data_spec()
    table = load_dataset(spec, label_column=label_column)
    if table.paths is None:  # Fashion-MNIST: written out once as PNGs, so the app can show them
        table = materialize(table, cache_dir() / spec.replace(":", "-"))
    if index is None:
        reasons.append(f"there is no index in {index_dir} yet")
    elif not _same_images(index, table):
        reasons.append(f"the index in {index_dir} holds other images than {table.name}")
    return table


def _new_location(index: IndexBackend | None, backend: str | None, uri: str | None) -> tuple[str, dict[str, str]]:
    """The backend of a rebuilt index and where it goes: as asked, else where the cached index is."""
    backend = backend or (index.backend if index is not None else DEFAULT_BACKEND)
    if not backend_class(backend).has_location:
        return backend, {}
    location = index.location() if index is not None and index.backend == backend else {}
    return backend, {**location, **({"uri": uri} if uri else {})}


def gallery_folders(index: IndexBackend) -> list[Path]:
    """The folders holding the index's images (each image's own folder, deduplicated, sorted).

    These, and nothing above them, are what an app must allow its web server to read.
    """
    return sorted({Path(r.path).parent for r in index.records() if r.path})


def example_images(index: IndexBackend, n: int = 6) -> list[str]:
    """``n`` gallery images to offer as example queries: the first image of each of the largest classes."""
    records = [r for r in index.records() if r.path]
    by_label: dict[str, list[str]] = {}
    for r in records:
        by_label.setdefault(r.label or "", []).append(r.path)  # type: ignore[arg-type]
    if len(by_label) <= 1:
        step = max(1, len(records) // max(n, 1))
        return [r.path for r in records[::step][:n]]  # type: ignore[misc]
    largest = sorted(by_label, key=lambda lab: (-len(by_label[lab]), lab))[:n]
    return [by_label[lab][0] for lab in largest]


def app_folders(artifacts: str | os.PathLike) -> dict[str, Path]:
    """Where an app keeps what it writes: ``{"root", "index", "feedback", "uploads"}``.

    ``root`` is the artifacts folder, or the folder holding it when ``artifacts`` is itself an
    index folder: an index folder is replaced whole on every save, so nothing else may live in it.
    """
    index_dir = index_dir_in(artifacts)
    root = index_dir.parent if index_dir == Path(artifacts) else Path(artifacts)
    return {
        "root": root,
        "index": index_dir,
        "feedback": root / FEEDBACK_SUBDIR,
        "uploads": root / UPLOADS_SUBDIR,
    }
