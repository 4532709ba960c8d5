"""The gallery an app serves: open its cached index, or build and cache it once.

A served gallery is an index folder (written by :meth:`simlib.search.Searcher.save`, so it
carries its own model) inside an artifacts folder. :func:`open_gallery` finds it, checks it
against what the user asked for (``--data``, ``--model``, ``--weights``, ``--image-size``) and
re-indexes only when something differs, so the second start of an app is fast.
:func:`gallery_folders` names the folders that hold the gallery's images: the only files an
app needs to serve.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from simlib.data import ImageTable, cache_dir, default_data_spec, load_dataset, materialize
from simlib.errors import SimlibError
from simlib.index import MANIFEST_FILE, IndexBackend, open_index, read_manifest
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


def index_dir_in(artifacts: str | os.PathLike) -> Path:
    """The index folder of an artifacts folder: the folder itself when it is an index, else ``<it>/index``."""
    artifacts = Path(artifacts)
    return artifacts if (artifacts / MANIFEST_FILE).is_file() else artifacts / INDEX_SUBDIR


def _trained_config(model_dir: Path) -> dict | None:
    """The saved ``config.json`` of a trained model folder (None: no model there, or not trained)."""
    from simlib.model import CONFIG_FILE
    from simlib.storage import load_json

    if not (model_dir / "model.keras").is_file() or not (model_dir / CONFIG_FILE).is_file():
        return None
    try:
        meta = load_json(model_dir / CONFIG_FILE)
    except (OSError, ValueError, SimlibError):
        return None
    config = meta.get("config") if isinstance(meta, dict) else None
    return meta if isinstance(config, dict) and config.get("trained") else None


def trained_models(artifacts: str | os.PathLike) -> list[Path]:
    """The trained model folders under the artifacts folder (:data:`TRAINED_MODEL_DIRS`), newest first.

    Cheap: only each folder's ``config.json`` is read (no TensorFlow).
    """
    root = app_folders(artifacts)["root"]
    found = [root / d for d in TRAINED_MODEL_DIRS if _trained_config(root / d) is not None]
    return sorted(found, key=lambda d: (d / "model.keras").stat().st_mtime, reverse=True)


def model_source(
    searcher, artifacts: str | os.PathLike | None = None, model_dir: str | os.PathLike | None = None
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
        if (_trained_config(found) or {}).get("fingerprint") == fingerprint:
            return f"{found} (the newest trained model in the artifacts folder)"
    cfg = searcher.embedder.config
    if cfg.trained:
        return "the index's own trained model"
    looked = ", ".join(f"{d}/" for d in TRAINED_MODEL_DIRS)
    where = f" in {app_folders(artifacts)['root']}" if artifacts is not None else ""
    return f"no trained model{where} (looked for {looked}): a fresh model, backbone weights {cfg.weights}"


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
):
    """Open the searcher an app serves, building and caching its index when needed.

    The index folder is ``artifacts`` itself when it holds an index, else ``artifacts/index``.
    It is loaded as it is unless the arguments ask for something else; then the gallery is
    (re-)indexed with a progress bar and saved there, atomically, for the next start.

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
        calibrate: after indexing a labelled gallery, calibrate its "no good match" threshold
            (:func:`simlib.search.calibrate.calibrate_threshold`: 20 % of the images query the rest) and
            save it with the index. A loaded index keeps the threshold it has (``simlib calibrate``).
        log: where the one-line notes go (default: stderr).
        backend: the backend of a new index ("faiss" or "milvus"); default: the cached index's
            own, else FAISS. Given and different from the cached index's, it forces a re-index.
        uri: Milvus: where a new index's collection goes (a ``.db`` path for Milvus Lite, or
            ``http://host:19530``); default: the cached index's own. A cached Milvus index is
            opened at this address when given.

    Returns:
        ``(searcher, note)``: the :class:`~simlib.search.Searcher` and one line saying what was done.
    """
    from simlib.config import IndexConfig, ModelConfig
    from simlib.model import Embedder, open_embedder, resolve_weights
    from simlib.search.searcher import Searcher

    index_dir = index_dir_in(artifacts)
    index = None
    if (index_dir / MANIFEST_FILE).is_file():
        cached = read_manifest(index_dir).backend
        index = open_index(index_dir, uri=uri if cached == (backend or cached) != "faiss" else None)
    reasons = []
    if index is not None and backend is not None and backend != index.backend:
        reasons.append(f"the index in {index_dir} is a {index.backend} index, not {backend}")

    # The model: --model, else the newest trained one (the index's own or one under the artifacts folder:
    # simlib train's and the app's ``model/``, the course's ``course/model_labels``), else the index's own
    # untrained one, else a fresh one.
    model = None
    if model_dir is not None:
        model = open_embedder(model_dir, image_size=image_size)
        if index is not None and index.manifest.model_fingerprint != model.fingerprint:
            reasons.append(f"the index in {index_dir} was built by another model than {model_dir}")
    else:
        own = Embedder.load(index_dir / index.manifest.model_dir) if index is not None else None
        found = trained_models(artifacts)
        own_time = (index_dir / MANIFEST_FILE).stat().st_mtime if own is not None and own.config.trained else None
        newest = found[0] if found else None
        if newest is not None and (own_time is None or (newest / "model.keras").stat().st_mtime > own_time):
            candidate = Embedder.load(newest)
            if own is None or own.fingerprint != candidate.fingerprint:
                log(f"using the trained model in {newest}")
                if index is not None:
                    reasons.append(f"a trained model was found in {newest}")
                model = candidate
            else:
                model = own
        else:
            model = own
    if model_dir is None and model is not None and (weights is not None or image_size is not None):
        cfg = model.config
        wanted_weights = resolve_weights(weights) if weights is not None else cfg.weights
        wanted_size = image_size or cfg.image_size
        if (wanted_weights, wanted_size) != (cfg.weights, cfg.image_size):
            reasons.append(
                f"the cached model is {cfg.image_size} px with weights {cfg.weights}, "
                f"not {wanted_size} px with weights {wanted_weights}"
            )
            model = Embedder.build(
                ModelConfig(
                    image_size=wanted_size, embedding_dim=embedding_dim or cfg.embedding_dim, weights=wanted_weights
                )
            )
    if model is None:
        model = open_embedder(image_size=image_size, weights=weights or "auto", embedding_dim=embedding_dim)

    # The images: --data, else the index's own, else the default data.
    table = None
    if data is not None or index is None:
        spec = data or default_data_spec()
        table = load_dataset(spec, label_column=label_column)
        if table.paths is None:  # Fashion-MNIST: written out once as PNGs, so the app can show them
            table = materialize(table, cache_dir() / spec.replace(":", "-"))
        if index is None:
            reasons.append(f"there is no index in {index_dir} yet")
        elif not _same_images(index, table):
            reasons.append(f"the index in {index_dir} holds other images than {table.name}")

    if not reasons:
        searcher = Searcher(model, index)  # type: ignore[arg-type]
        note = f"loaded {index_dir} ({len(index):,} images)"  # type: ignore[arg-type]
        if searcher.threshold is None:
            note += f"; no 'no good match' threshold: run `simlib calibrate --index {index_dir}` to add one"
        return searcher, note

    if table is None:
        table = index_table(index)  # type: ignore[arg-type]
    kind = index.config.kind if index is not None else "auto"
    where = _new_index_location(index, backend, uri)
    if index is not None:
        index.close()  # Milvus Lite: the rebuilt collection may go into the same file
    log(f"indexing {len(table):,} images of {table.name}: {'; '.join(reasons)}")
    t0 = time.perf_counter()
    searcher, result = Searcher.from_table(
        model, table, IndexConfig(kind=kind), progress=progress and "indexing", **where
    )
    elapsed = time.perf_counter() - t0
    for row, reason in list(result.skipped.items())[:5]:
        log(f"skipped {table.source(row)}: {reason}")
    if len(result.skipped) > 5:
        log(f"... and {len(result.skipped) - 5} more unreadable images skipped")
    skipped_paths = tuple(str(Path(table.source(r)).resolve()) for r in result.skipped)
    searcher.index.manifest = searcher.index.manifest.replace(skipped_paths=skipped_paths)
    if calibrate and table.has_labels:
        _calibrate(searcher, log)
    searcher.save(index_dir)
    note = (
        f"indexed {len(searcher.index):,} images in {elapsed:.1f} s (skipped {len(result.skipped)}), "
        f"cached in {index_dir}"
    )
    return searcher, note


def _new_index_location(index: IndexBackend | None, backend: str | None, uri: str | None) -> dict[str, str | None]:
    """``backend``/``uri``/``collection`` for :meth:`Searcher.from_table`: as asked, else as the cached index."""
    backend = backend or (index.backend if index is not None else "faiss")
    if backend == "faiss":
        return {"backend": "faiss"}
    same = index is not None and index.backend == backend
    uri = uri or (index.manifest.uri if same else None)  # type: ignore[union-attr]
    if not uri:
        raise SimlibError(f"a {backend} gallery needs a uri (for Milvus Lite a path ending in .db)")
    collection = index.manifest.collection if same else None  # type: ignore[union-attr]
    return {"backend": backend, "uri": uri, "collection": collection}


def _calibrate(searcher, log: Callable[[str], None]) -> None:
    """Calibrate the "no good match" threshold on the gallery's own labels; a gallery too small is only noted."""
    from simlib.search.calibrate import calibrate_threshold

    t0 = time.perf_counter()
    try:
        info = calibrate_threshold(searcher)
    except SimlibError as e:
        log(f"no 'no good match' threshold: {e}")
        return
    log(
        f"calibrated the 'no good match' threshold: {info['score']:.4f} (top-1 same-class precision "
        f"{info['precision']:.2f} on {info['n_queries']} validation queries, {info['coverage']:.0%} of them "
        f"clear it, {time.perf_counter() - t0:.1f} s)"
    )
    if not info["reached"]:
        log(f"warning: no threshold reaches precision {info['target']}; using the most precise one")
    if not info["supported"]:
        log("this model cannot tell good matches from bad ones: 'no good match' will not be shown")


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
