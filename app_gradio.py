"""The simlib demo: upload, webcam or clipboard image in, the top-K most similar gallery images out.

    python app_gradio.py                       # serve artifacts/ (built and cached on first start)
    python app_gradio.py --share --auth me:pw  # a public link, behind a password
    python app_gradio.py --allow-add           # visitors may add their image to the gallery

Click a result to see why it matched (similarity heat maps over both images) and mark it
"similar" / "not similar" (stored as training data in ``<artifacts>/feedback``). Near-duplicate
results are merged; with a calibrated threshold, weak results are labelled and "No good match"
is said plainly.

Pure functions first (testable without a server), then :func:`build_demo`, then :func:`serve`
and :func:`main`. Nothing heavy is imported at module level: TensorFlow, FAISS and Gradio
load inside the functions that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from simlib.errors import SimlibError

DEFAULT_K = 5
MAX_K = 50
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# Catalogue photos and phone pictures are well under this; anything larger is refused by Gradio before
# it reaches the model (simlib's own pixel limit then guards decoding).
MAX_UPLOAD = "10mb"
# One query keeps every core busy inside TensorFlow, so more parallel queries only add memory;
# one per core (up to 4) lets one query's upload, decoding and encoding overlap another's forward pass.
CONCURRENCY_LIMIT = max(1, min(4, os.cpu_count() or 1))
QUEUE_SIZE = 64  # waiting requests beyond this are turned away instead of piling up memory
# Filters shown for the product set; other galleries get their first attributes (and labels).
PREFERRED_FILTERS = ("masterCategory", "subCategory", "baseColour", "gender")
MAX_FILTERS = 4
ANY = "any"
# Duplicate collapse (see collapse_threshold): the library's default for a model that tells items apart...
COLLAPSE_AT = 0.97
# ...and the floor for an untrained backbone, which puts every pair of product photos above 0.93 cosine
# (nearest distinct neighbours: median 0.998, 99th percentile 0.9998) and JPEG re-encoded copies at
# 0.9998-0.99999 (measured at 64 px on the product set).
UNTRAINED_COLLAPSE_AT = 0.9998
EXPLAIN_SIZE = 256  # the explanation's images are this large on their longer side
VERDICT_LABELS = {"similar": "similar", "not_similar": "not similar"}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- pure functions
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


def make_filters(fields: Sequence[str], values: Sequence[Any]) -> dict[str, list[str]]:
    """``{attribute: [allowed values]}`` from the filter widgets' values (empty or "any" means no filter)."""
    filters = {}
    for field, value in zip(fields, values, strict=True):
        chosen = [value] if isinstance(value, str) else list(value or [])
        chosen = [str(v) for v in chosen if v not in (None, "", ANY)]
        if chosen:
            filters[field] = chosen
    return filters


def hit_caption(hit) -> str:
    """A gallery caption: rank, similarity score, label, then "+N copies" and "weak" when they apply."""
    caption = f"#{hit.rank} · {hit.score:.3f}" + (f" · {hit.label}" if hit.label else "")
    if hit.duplicates:
        caption += f" · +{hit.duplicates} cop{'ies' if hit.duplicates > 1 else 'y'}"
    return caption + (" · weak" if hit.weak else "")


def collapse_threshold(info: Mapping[str, Any]) -> float:
    """The cosine above which the app merges a result into a better-ranked one, for this model.

    A copy must be far more alike than a merely good match, so the threshold is at least halfway
    from the calibrated "good match" score to 1 (with the untrained model's calibrated 0.9997 on
    the product set: 0.99987, above its closest distinct photos, under most re-encoded copies).
    Without a calibration: :data:`COLLAPSE_AT`, or :data:`UNTRAINED_COLLAPSE_AT` for an untrained
    backbone, whose scores are all crowded just under 1.

    Args:
        info: ``Searcher.describe()`` (``weights``, ``trained``, ``threshold``).
    """
    floor = UNTRAINED_COLLAPSE_AT if is_untrained(info) else COLLAPSE_AT
    calibrated = info.get("threshold")
    return floor if calibrated is None else max(floor, (1.0 + float(calibrated)) / 2)


def hit_record(hit) -> dict[str, Any]:
    """A hit for the structured (JSON) output: rank, id, score, label, gallery_path, attributes.

    The file is under ``gallery_path``, not ``path``: gradio_client takes any dict with a "path"
    key for a file to download and would replace the whole record with a local copy.
    """
    d = hit.to_dict()
    d["gallery_path"] = d.pop("path")
    return d


def is_untrained(info: Mapping[str, Any]) -> bool:
    """True when the model has neither pretrained backbone weights nor simlib training (``Searcher.describe()``)."""
    return info.get("weights") == "none" and not info.get("trained")


def status_text(
    info: Mapping[str, Any], seconds: float | None = None, n_hits: int | None = None, merged: int | None = None
) -> str:
    """The status line: gallery size, model, backbone weights and (after a query) the query time,
    the number of results and of near-duplicates merged."""
    weights = info.get("weights")
    weights = Path(weights).name if weights not in ("imagenet", "none", None) else weights
    model = "trained" if info.get("trained") else "untrained" if is_untrained(info) else "not fine-tuned"
    parts = [
        f"gallery: {info['gallery_size']:,} images ({info['index_kind']} index)",
        f"model: ResNet50, {info['image_size']} px, {info['embedding_dim']}-d, {model}",
        f"backbone weights: {weights}",
    ]
    if seconds is not None:
        query = f"query: {seconds * 1000:.0f} ms" + (f", {n_hits} results" if n_hits is not None else "")
        if merged is not None:
            query += f", {merged} near-duplicate{'s' * (merged != 1)} merged"
        parts.append(query)
    return " · ".join(parts)


def no_match_banner(results: Mapping[str, Any] | None) -> str:
    """The banner's text for :func:`search`'s results: empty unless nothing clears the calibrated threshold."""
    if not results or not results.get("no_good_match"):
        return ""
    hits = results.get("hits") or []
    best = f" (best score {hits[0]['score']:.4f})" if hits else ""
    return (
        f"### No good match\nNo gallery image reaches the calibrated similarity threshold "
        f"{results['threshold']:.4f}{best}: the results below are only the closest images, marked weak."
    )


UNTRAINED_NOTICE = (
    "**This model is untrained.** Its ResNet50 backbone has random weights (no ImageNet weights could be "
    "loaded and no trained model was given), so results follow colours and rough shapes, not what the "
    "objects are. Train a model in the course (or `simlib train`) and start the app with `--model DIR`, "
    "or use `--weights imagenet` on a machine that can download them."
)


def search(
    searcher,
    image: Any,
    k: int = DEFAULT_K,
    filters: Mapping[str, Any] | None = None,
    collapse: float | None = None,
    lock: Any = None,
) -> tuple[list[tuple[str, str]], dict[str, Any], str]:
    """Query the gallery: what the app shows for one image.

    Args:
        searcher: a :class:`simlib.search.Searcher`.
        image: a file path, bytes, PIL image or array (None: no image yet).
        k: number of results (1-50).
        filters: attribute -> value(s), applied inside the search.
        collapse: merge results at least this similar to a better-ranked one (None: off).
        lock: held while the index is read (the app's lock against "add to gallery"); the
            image is embedded outside it.

    Returns:
        ``(gallery, results, status)``: ``[(path, caption)]`` for a ``gr.Gallery``; a JSON-ready
        ``{"k", "filters", "query_ms", "collapse", "merged", "threshold", "no_good_match",
        "hits": [hit_record(...)]}`` (``no_good_match`` is None without a calibrated threshold);
        the status line.

    Raises:
        SimlibError: no image, a bad image or a bad ``k``, with a message for the user.
    """
    from simlib.search import no_good_match

    if image is None:
        raise SimlibError("no query image: upload a file, take a webcam picture or paste one first")
    if not 1 <= int(k) <= MAX_K:
        raise SimlibError(f"k must be between 1 and {MAX_K}, not {k}")
    t0 = time.perf_counter()
    vector = searcher.embedder.embed_images([image])[0]
    with lock or contextlib.nullcontext():
        hits = searcher.query_vector(vector, int(k), dict(filters or {}) or None, collapse_duplicates=collapse)
        info = searcher.describe()
    seconds = time.perf_counter() - t0
    merged = sum(h.duplicates for h in hits) if collapse is not None else None
    threshold = info["threshold"]
    gallery = [(h.path, hit_caption(h)) for h in hits if h.path]
    results = {
        "k": int(k),
        "filters": dict(filters or {}),
        "query_ms": round(seconds * 1000, 1),
        "collapse": collapse,
        "merged": merged,
        "threshold": threshold,
        "no_good_match": None if threshold is None else no_good_match(hits),
        "hits": [hit_record(h) for h in hits],
    }
    return gallery, results, status_text(info, seconds, len(hits), merged)


def _display_image(image: Any):
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


def explain(searcher, image: Any, result_id: int, lock: Any = None, rank: int | None = None) -> dict[str, Any]:
    """Why a gallery image is similar to the query: both images with their similarity heat maps.

    Args:
        searcher: a :class:`simlib.search.Searcher`.
        image: the query image (path, bytes, PIL image or array).
        result_id: the result's gallery id (``Hit.id``).
        lock: held while the index is read.
        rank: the result's rank, for the text (None: not said).

    Returns:
        ``{"query", "query_heat", "result", "result_heat"}`` as RGB uint8 arrays, each
        :data:`EXPLAIN_SIZE` pixels on its longer side (the heat maps blended over the images by
        :func:`simlib.explain.overlay`), and ``"score"`` (cosine),
        ``"weak"``, ``"id"``, ``"label"``, ``"text"`` (one Markdown line for the page).

    Raises:
        SimlibError: no image, a bad image, or an id that is not in the gallery.
    """
    import numpy as np

    from simlib.explain import overlay, similarity_maps

    if image is None:
        raise SimlibError("no query image: search first, then click a result")
    query = _display_image(image)
    with lock or contextlib.nullcontext():
        record = searcher.index.record(int(result_id))  # SimlibError when the id is not in the gallery
        stored = searcher.index.vectors_of([record.id])[0]
        threshold = searcher.threshold
    if not record.path:
        raise SimlibError(f"gallery image {record.id} has no file to show")
    result = _display_image(record.path)
    score = float(searcher.embedder.embed_images([image])[0] @ stored)
    query_heat, result_heat = similarity_maps(searcher.embedder, query, result)
    weak = threshold is not None and score < threshold
    text = (f"**#{rank}** · " if rank else "") + f"cosine similarity **{score:.4f}**"
    text += (f" · {record.label}" if record.label else "") + (
        f" · **weak** (under the calibrated {threshold:.4f})" if weak else ""
    )
    return {
        "query": np.asarray(query),
        "query_heat": overlay(query, query_heat),
        "result": np.asarray(result),
        "result_heat": overlay(result, result_heat),
        "score": score,
        "weak": weak,
        "id": record.id,
        "label": record.label,
        "text": text,
    }


def record_feedback(store, searcher, image: Any, result_id: int, verdict: str, lock: Any = None):
    """Store a verdict on a result with :meth:`simlib.feedback.FeedbackStore.add_hit`.

    The result's score is recomputed from the query (a request cannot plant a score), and the
    model's fingerprint is stored with it, so training can keep feedback on this model's results.

    Returns:
        The stored :class:`simlib.feedback.Feedback`.

    Raises:
        SimlibError: no image, a bad image, an unknown id or verdict.
    """
    from simlib.feedback import VERDICTS
    from simlib.search import Hit

    if image is None:
        raise SimlibError("no query image: search first, then mark a result")
    if verdict not in VERDICTS:
        raise SimlibError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    vector = searcher.embedder.embed_images([image])[0]
    with lock or contextlib.nullcontext():
        record = searcher.index.record(int(result_id))
        score = float(vector @ searcher.index.vectors_of([record.id])[0])
        fingerprint = searcher.fingerprint
    hit = Hit(0, record.id, score, record.path, record.label, record.attributes)
    return store.add_hit(image, hit, verdict, fingerprint)


def add_to_gallery(
    searcher, image: Any, index_dir: str | os.PathLike, upload_dir: str | os.PathLike, lock: Any = None
) -> tuple[str, list[int]]:
    """Add the query image to the gallery and save the index, without rebuilding it.

    The image is stored in ``upload_dir`` (PNG, named by its pixels' hash: see
    :func:`simlib.gallery.store_upload`), embedded with :meth:`Searcher.add_images` and the
    index saved to ``index_dir``, reusing its saved model (hard links, no re-serialising).

    Returns:
        ``(message, added_ids)``; ``added_ids`` is empty when the image was already there.
    """
    from simlib.gallery import store_upload

    if image is None:
        raise SimlibError("no image to add: upload a file, take a webcam picture or paste one first")
    path = store_upload(image, upload_dir)
    index_dir = Path(index_dir)
    with lock or contextlib.nullcontext():
        added, skipped = searcher.add_images([path])
        if added:
            searcher.save(index_dir, reuse_model=index_dir / searcher.index.manifest.model_dir)
        size = len(searcher.index)
    if not added:
        return f"Not added: {next(iter(skipped.values()), 'unreadable')}.", []
    return f"Added to the gallery as image {added[0]} (the gallery now holds {size:,} images).", added


def uploaded_image(payload: Any, upload_folder: str | os.PathLike | None = None) -> str | bytes | None:
    """The query image from ``gr.Image``'s raw payload: the uploaded file's path (or a data URL's bytes).

    Gradio checks that files sent with its file marker were uploaded, but passes a bare
    ``{"path": ...}`` on as it is: a path outside the upload folder is refused here, so a request
    cannot make the app read any other file on the server.
    """
    from gradio.utils import get_upload_folder, is_in_or_equal

    if payload is None or isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        payload = {"path": payload}
    url, path = payload.get("url") or "", payload.get("path")
    if url.startswith("data:") and "," in url:
        import base64
        import binascii

        try:
            return base64.b64decode(url.split(",", 1)[1], validate=True)
        except binascii.Error:
            raise SimlibError("the query image's data URL is not valid base64") from None
    if not path or not is_in_or_equal(path, upload_folder or get_upload_folder()):
        raise SimlibError("the query image must be uploaded, not named by a path on the server")
    return str(path)


def user_message(error: SimlibError, image: Any) -> str:
    """The error text for the page: an uploaded file is named by its own name, not its server path."""
    message = str(error)
    path = image.get("path") if isinstance(image, dict) else image
    if isinstance(path, str | os.PathLike):
        message = message.replace(str(path), Path(path).name)
    return message


def gallery_id(value: Any) -> int:
    """A result id as an API request sends it (int, float or text), checked to be a whole number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer():
        raise SimlibError(f"result_id must be a gallery id (a whole number, as in the results' 'id'), not {value!r}")
    return int(number)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``"user:password"`` -> ``("user", "password")``; None stays None."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SimlibError("--auth takes USER:PASSWORD (e.g. --auth ana:s3cret)")
    return user, password


def launch_settings(searcher, artifacts: str | os.PathLike | None = None, allow_add: bool = False) -> dict[str, Any]:
    """The safety settings for ``Blocks.launch``: serve the gallery's folders and nothing else.

    ``allowed_paths`` holds only the folders of the gallery's images, plus with ``allow_add`` the
    folder that added images are copied into (``<artifacts>/gallery_uploads``: they must be
    servable as soon as they are added, after launch). Everything else in the artifacts folder
    (index, model, feedback) is blocked even though it sits in the working directory; uploads
    are size-limited.
    """
    from simlib.gallery import app_folders, gallery_folders

    allowed = set(gallery_folders(searcher.index))
    blocked: set[Path] = set()
    if artifacts:
        folders = {k: v.resolve() for k, v in app_folders(artifacts).items()}
        if allow_add:
            folders["uploads"].mkdir(parents=True, exist_ok=True)
            allowed.add(folders["uploads"])
        blocked = {folders["index"], folders["feedback"]}
        # An artifacts folder is blocked whole but for the folders served from it; when an index
        # folder was given instead, the folder around it may hold anything (the gallery itself).
        if folders["index"] != Path(artifacts).resolve() and folders["root"].is_dir():
            blocked |= {
                p
                for p in folders["root"].iterdir()
                if not any(a == p or p in a.parents or a in p.parents for a in allowed)
            }
    return {
        "allowed_paths": [str(p) for p in sorted(allowed)],
        "blocked_paths": [str(p) for p in sorted(blocked)],
        "max_file_size": MAX_UPLOAD,
        "show_error": True,
        "ssr_mode": False,
        "enable_monitoring": False,
        "mcp_server": False,
    }


def share_failure(gradio_output: str) -> str:
    """Why Gradio made no share link, in one clause, from what ``launch()`` printed."""
    line = next((ln.strip() for ln in gradio_output.splitlines() if "could not create share link" in ln.lower()), "")
    detail = line.split(". ", 1)[1].rstrip(". ") if ". " in line else ""
    reason = "Gradio's share server cannot be reached from this machine (offline or behind a firewall?)"
    return reason + (f" [{detail}]" if detail else "")


def _blank_image(searcher):
    import numpy as np

    s = searcher.embedder.image_size
    return np.full((s, s, 3), 255, np.uint8)


# ----------------------------------------------------------------------------- the Blocks
def build_demo(
    searcher,
    k: int = DEFAULT_K,
    examples: Sequence[str] | None = None,
    title: str = "simlib: find similar images",
    *,
    artifacts: str | os.PathLike | None = None,
    allow_add: bool = False,
    collapse: float | None = None,
):
    """The Gradio app for ``searcher``: image in, gallery of the top-K most similar images out.

    Args:
        searcher: a :class:`simlib.search.Searcher`.
        k: the Top-K slider's starting value.
        examples: example query images (default: a few gallery images of different classes).
        title: the page title.
        artifacts: the artifacts (or index) folder the searcher was opened from: feedback goes to
            its ``feedback/`` and added images to its ``gallery_uploads/`` (see
            :func:`simlib.gallery.app_folders`). None: no feedback buttons, no adding.
        allow_add: offer "Add to gallery" (needs ``artifacts``): any visitor can then grow the gallery.
        collapse: the duplicate-collapse threshold (default: :func:`collapse_threshold`).

    Returns:
        A ``gr.Blocks`` with its queue set. Its API: "search" takes ``(image, k)`` (and optional
        filters and ``collapse``) and returns ``(gallery, results, status)``; "explain" takes
        ``(image, result_id)`` and returns ``(query_heat, result_heat, details)``; "feedback"
        takes ``(image, result_id, verdict)``; "add_to_gallery" (with ``allow_add``) takes the image.
    """
    import gradio as gr

    from simlib.feedback import FeedbackStore
    from simlib.gallery import app_folders, example_images

    if allow_add and artifacts is None:
        raise SimlibError("adding to the gallery needs the artifacts folder to save the index in")
    folders = app_folders(artifacts) if artifacts is not None else None
    store = FeedbackStore(folders["feedback"]) if folders else None
    # Searcher is not thread-safe while the gallery changes: every index read and the add hold this.
    lock = threading.Lock()
    info = searcher.describe()
    collapse = collapse_threshold(info) if collapse is None else float(collapse)
    searcher.query(_blank_image(searcher), 1)  # trace the model now, not on the first visitor's query
    fields = filter_fields(searcher.index.attribute_values())
    if examples is None:
        examples = example_images(searcher.index)

    def user_error(e: SimlibError, image) -> gr.Error:
        return gr.Error(user_message(e, image), print_exception=False)

    def run_search(image, k, *rest):
        *filter_values, collapse_on = rest
        try:
            path = uploaded_image(image)
            filters = make_filters(list(fields), filter_values)
            gallery, results, status = search(searcher, path, int(k), filters, collapse if collapse_on else None, lock)
        except SimlibError as e:
            raise user_error(e, image) from None
        shown = [{"id": h["id"], "rank": h["rank"]} for h in results["hits"] if h["gallery_path"]]
        return gallery, results, status, {"query": path, "shown": shown}

    # Name the API's parameters after the filters (Gradio reads the signature), not param_2, param_3...
    run_search.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for name in ["image", "k", *fields, "collapse"]
        ]
    )

    def after_search(results):
        banner = no_match_banner(results)
        return gr.update(value=banner, visible=bool(banner)), gr.update(visible=False), None, ""

    def on_select(last, evt):
        if not last or evt.index is None or not 0 <= evt.index < len(last["shown"]):
            raise gr.Error("search first, then click a result", print_exception=False)
        hit = last["shown"][evt.index]
        try:
            e = explain(searcher, last["query"], hit["id"], lock, rank=hit["rank"])
        except SimlibError as err:
            raise user_error(err, last["query"]) from None
        shown = (e["query"], e["query_heat"], e["result_heat"], e["result"])
        return *shown, e["text"], {**hit, "query": last["query"]}, gr.update(visible=True), ""

    on_select.__annotations__ = {"evt": gr.SelectData}  # Gradio finds the event data by this annotation

    def api_explain(image, result_id):
        try:
            e = explain(searcher, uploaded_image(image), gallery_id(result_id), lock)
        except SimlibError as err:
            raise user_error(err, image) from None
        details = {k: e[k] for k in ("id", "score", "weak", "label")}
        return e["query_heat"], e["result_heat"], details

    def feedback_message(entry, rank=None) -> str:
        which = f"result #{rank}" if rank else f"gallery image {entry.result_id}"
        return f"Thank you: {which} marked **{VERDICT_LABELS[entry.verdict]}** (saved for training)."

    def give_feedback(verdict):
        def handler(selected):
            if not selected:
                raise gr.Error("click a result first, then say whether it is similar", print_exception=False)
            try:
                entry = record_feedback(store, searcher, selected["query"], selected["id"], verdict, lock)
            except SimlibError as e:
                raise user_error(e, selected["query"]) from None
            return feedback_message(entry, selected["rank"])

        return handler

    def api_feedback(image, result_id, verdict):
        try:
            entry = record_feedback(store, searcher, uploaded_image(image), gallery_id(result_id), str(verdict), lock)
        except SimlibError as e:
            raise user_error(e, image) from None
        return feedback_message(entry)

    def run_add(image):
        try:
            message, _ = add_to_gallery(searcher, uploaded_image(image), folders["index"], folders["uploads"], lock)
        except SimlibError as e:
            raise user_error(e, image) from None
        return message, status_text(searcher.describe())

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nUpload, capture or paste an image: the app shows the most similar gallery images.")
        if is_untrained(info):
            gr.Markdown(UNTRAINED_NOTICE, elem_id="untrained-notice")
        with gr.Row():
            with gr.Column(scale=1):
                query = gr.Image(
                    sources=["upload", "webcam", "clipboard"],
                    type="filepath",
                    label="Query image",
                    height=280,
                    elem_id="query",
                )
                top_k = gr.Slider(1, MAX_K, value=min(max(int(k), 1), MAX_K), step=1, label="Top-K", elem_id="k")
                filter_widgets = [
                    gr.Dropdown(choices=values, value=[], multiselect=True, label=field, elem_id=f"filter-{field}")
                    for field, values in fields.items()
                ]
                collapse_box = gr.Checkbox(
                    value=True,
                    label="Merge near-duplicates",
                    info=f"a result at least {collapse:g} similar to a better one is counted in its caption",
                    elem_id="collapse",
                )
                button = gr.Button("Search", variant="primary", elem_id="search")
                if allow_add:
                    add_button = gr.Button("Add this image to the gallery", elem_id="add")
                    add_status = gr.Markdown(elem_id="add-status")
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[query], label="Example queries")
            with gr.Column(scale=2):
                banner = gr.Markdown(visible=False, elem_id="no-match")
                results = gr.Gallery(
                    label="Most similar (click one: why is it similar?)",
                    columns=4,
                    object_fit="contain",
                    height="auto",
                    allow_preview=False,
                    elem_id="results",
                )
                status = gr.Markdown(status_text(info), label="status", elem_id="status")
                with gr.Column(visible=False, elem_id="explain") as explain_box:
                    gr.Markdown(
                        "### Why are they similar?\nThe heat maps mark the regions of each image whose features "
                        "match the other image (red: most, blue: least)."
                    )
                    explain_text = gr.Markdown(elem_id="explain-text")
                    with gr.Row():
                        images = [
                            gr.Image(
                                label=label,
                                interactive=False,
                                height=220,
                                format="png",
                                buttons=["fullscreen"],
                                elem_id=f"explain-{name}",
                            )
                            for name, label in (
                                ("query", "query"),
                                ("query-heat", "query heat map"),
                                ("result-heat", "result heat map"),
                                ("result", "result"),
                            )
                        ]
                    if store is not None:
                        with gr.Row():
                            similar = gr.Button("Similar", elem_id="fb-similar", size="sm")
                            not_similar = gr.Button("Not similar", elem_id="fb-not-similar", size="sm")
                    feedback_status = gr.Markdown(elem_id="feedback-status")
                with gr.Accordion("Results as JSON", open=False):
                    details = gr.JSON(label="results")
        last_search = gr.State(None)  # the query (an uploaded file) and the results on show, per visitor
        selected = gr.State(None)
        # Inputs of the API-only endpoints ("explain", "feedback"): never shown.
        api_id = gr.Number(visible=False, precision=0)
        api_verdict = gr.Textbox(visible=False)
        explain_details = gr.JSON(visible=False)

        button.click(
            run_search,
            inputs=[query, top_k, *filter_widgets, collapse_box],
            outputs=[results, details, status, last_search],
            api_name="search",
            # The handler gets the upload as Gradio received it, undecoded: stock gr.Image opens it with
            # Pillow first, so a file that is not an image fails inside Gradio with a traceback. simlib
            # decodes instead (one path for gallery and queries: any mode, EXIF, pixel limit before
            # decoding) and a bad upload gets one clear message.
            preprocess=False,
        ).success(
            after_search,
            inputs=[details],
            outputs=[banner, explain_box, selected, feedback_status],
            api_visibility="private",
        )
        results.select(
            on_select,
            inputs=[last_search],
            outputs=[*images, explain_text, selected, explain_box, feedback_status],
            api_visibility="private",
        )
        explain_trigger = gr.Button(visible=False)
        explain_trigger.click(
            api_explain,
            inputs=[query, api_id],
            outputs=[images[1], images[2], explain_details],
            api_name="explain",
            preprocess=False,
        )
        if store is not None:
            similar.click(give_feedback("similar"), [selected], [feedback_status], api_visibility="private")
            not_similar.click(give_feedback("not_similar"), [selected], [feedback_status], api_visibility="private")
            feedback_trigger = gr.Button(visible=False)
            feedback_trigger.click(
                api_feedback,
                inputs=[query, api_id, api_verdict],
                outputs=[feedback_status],
                api_name="feedback",
                preprocess=False,
            )
        if allow_add:
            add_button.click(
                run_add, inputs=[query], outputs=[add_status, status], api_name="add_to_gallery", preprocess=False
            )
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo


# ----------------------------------------------------------------------------- serving
def serve(
    demo,
    searcher,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    artifacts: str | os.PathLike | None = None,
    allow_add: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[str, str | None]:
    """Launch ``demo`` without blocking, with the safety settings of :func:`launch_settings`
    (``allow_add`` as given to :func:`build_demo`: the folder of added images is served too).

    With ``share``, Gradio's public link is created where the network allows; when it cannot be,
    the app keeps serving locally and one line says why.

    Returns:
        ``(local_url, share_url)``; ``share_url`` is None without a public link.
    """
    log = log or _stderr
    if share and not auth:
        log("warning: --share without --auth lets anyone with the link use the app; add --auth USER:PASSWORD")
    captured = io.StringIO()
    # Gradio prints several lines of its own (a multi-line paragraph when the share link fails);
    # capture them and print one clear line of our own instead.
    with contextlib.redirect_stdout(captured), _port_errors(host, port):
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            auth=auth,
            prevent_thread_lock=True,
            quiet=True,
            **launch_settings(searcher, artifacts, allow_add),
        )
    local_url = demo.local_url
    log(f"serving {len(searcher.index):,} images on {local_url}" + (" (password required)" if auth else ""))
    share_url = demo.share_url if share else None
    if share_url:
        log(f"public link: {share_url} (expires within a week; stop the app to close it)")
    elif share:
        log(f"no public link: {share_failure(captured.getvalue())}; the app keeps serving on {local_url}")
    return local_url, share_url


@contextlib.contextmanager
def _port_errors(host: str, port: int | None):
    try:
        yield
    except OSError as e:  # Gradio says "Cannot find empty port in range"
        raise SimlibError(f"cannot listen on {host}:{port} ({str(e).split('.')[0]}): pass --port N") from None


def build_parser() -> argparse.ArgumentParser:
    """The app's options (``--data``, ``--model``, ``--weights``, ``--image-size`` as in the simlib CLI)."""
    from simlib.cli import _add_data_options, _add_model_options

    p = argparse.ArgumentParser(prog="app_gradio.py", description="Serve the simlib similarity-search demo.")
    _add_data_options(p)
    _add_model_options(p)
    # None means "not given": the cached index's own model is kept unless these ask for another.
    p.set_defaults(weights=None, embedding_dim=None)
    p.add_argument("--artifacts", default="artifacts", metavar="DIR", help="index cache (default: artifacts)")
    p.add_argument(
        "--index",
        metavar="DIR",
        help="serve this index folder as it is (any backend, e.g. one built with `simlib index --backend milvus`)",
    )
    p.add_argument("--uri", metavar="URI", help="with --index: reach its Milvus collection at this address")
    p.add_argument(
        "--mmap",
        action="store_true",
        help="with --index: map the FAISS index's vectors from disk, not into memory (read-only; indexes past RAM)",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--share", action="store_true", help="also create a temporary public link (use with --auth)")
    p.add_argument(
        "--auth", metavar="USER:PASSWORD", default=os.environ.get("SIMLIB_AUTH"), help="require a login ($SIMLIB_AUTH)"
    )
    p.add_argument("-k", type=int, default=DEFAULT_K, help=f"results shown at first (default {DEFAULT_K})")
    p.add_argument(
        "--allow-add",
        action="store_true",
        help="let visitors add their image to the gallery (off by default: anyone with the link could)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Start the app: open (or build and cache) the gallery index, then serve it until Ctrl-C."""
    args = build_parser().parse_args(argv)
    from simlib.cli import _quiet_tensorflow

    _quiet_tensorflow()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    t0 = time.perf_counter()
    try:
        auth = parse_auth(args.auth)
        if not 1 <= args.k <= MAX_K:
            raise SimlibError(f"-k must be between 1 and {MAX_K}")
        from simlib.gallery import open_gallery

        if args.mmap and (not args.index or args.allow_add):
            raise SimlibError(
                "--mmap needs --index DIR and cannot be combined with --allow-add (a mapped index is read-only)"
            )
        if args.index:
            from simlib.search import Searcher

            searcher = Searcher.load(args.index, model_dir=args.model, uri=args.uri, mmap=args.mmap)
            note = f"loaded {args.index} ({searcher.describe()['backend']}, {len(searcher.index):,} images)"
        else:
            searcher, note = open_gallery(
                args.artifacts,
                data=args.data,
                model_dir=args.model,
                weights=args.weights,
                image_size=args.image_size,
                embedding_dim=args.embedding_dim,
                label_column=args.label_column,
            )
        _stderr(note)
        if is_untrained(searcher.describe()):
            _stderr("note: the model is untrained (random backbone): the page says so")
        # Feedback and added images go beside the served index (see simlib.gallery.app_folders).
        folder = args.index or args.artifacts
        demo = build_demo(searcher, k=args.k, artifacts=folder, allow_add=args.allow_add)
        serve(
            demo,
            searcher,
            host=args.host,
            port=args.port,
            share=args.share,
            auth=auth,
            artifacts=folder,
            allow_add=args.allow_add,
        )
        if args.allow_add:
            _stderr("note: --allow-add: visitors can add images to the gallery")
        _stderr(f"ready in {time.perf_counter() - t0:.1f} s; Ctrl-C stops the app")
    except SimlibError as e:
        _stderr(f"app_gradio.py: error: {e}")
        return 1
    demo.block_thread()  # until Ctrl-C, which closes the server
    return 0


if __name__ == "__main__":
    sys.exit(main())
