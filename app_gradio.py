"""The simlib demo: upload, webcam or clipboard image in, the top-K most similar gallery images out.

    python app_gradio.py                       # serve artifacts/ (built and cached on first start)
    python app_gradio.py --share --auth me:pw  # a public link, behind a password

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
        attribute_values: attribute -> distinct values, as from ``VectorIndex.attribute_values()``.
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
    """A gallery caption: rank, similarity score, label."""
    return f"#{hit.rank} · {hit.score:.3f}" + (f" · {hit.label}" if hit.label else "")


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


def status_text(info: Mapping[str, Any], seconds: float | None = None, n_hits: int | None = None) -> str:
    """The status line: gallery size, model, backbone weights and (after a query) the query time."""
    weights = info.get("weights")
    weights = Path(weights).name if weights not in ("imagenet", "none", None) else weights
    model = "trained" if info.get("trained") else "untrained" if is_untrained(info) else "not fine-tuned"
    parts = [
        f"gallery: {info['gallery_size']:,} images ({info['index_kind']} index)",
        f"model: ResNet50, {info['image_size']} px, {info['embedding_dim']}-d, {model}",
        f"backbone weights: {weights}",
    ]
    if seconds is not None:
        parts.append(f"query: {seconds * 1000:.0f} ms" + (f", {n_hits} results" if n_hits is not None else ""))
    return " · ".join(parts)


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
    info: Mapping[str, Any] | None = None,
) -> tuple[list[tuple[str, str]], dict[str, Any], str]:
    """Query the gallery: what the app shows for one image.

    Args:
        searcher: a :class:`simlib.search.Searcher`.
        image: a file path, bytes, PIL image or array (None: no image yet).
        k: number of results (1-50).
        filters: attribute -> value(s), applied inside the search.
        info: ``searcher.describe()``, computed once by the caller (it hashes every model weight).

    Returns:
        ``(gallery, results, status)``: ``[(path, caption)]`` for a ``gr.Gallery``; a JSON-ready
        ``{"k", "filters", "query_ms", "hits": [hit_record(...)]}``;
        the status line.

    Raises:
        SimlibError: no image, a bad image or a bad ``k``, with a message for the user.
    """
    if image is None:
        raise SimlibError("no query image: upload a file, take a webcam picture or paste one first")
    if not 1 <= int(k) <= MAX_K:
        raise SimlibError(f"k must be between 1 and {MAX_K}, not {k}")
    hits, seconds = searcher.timed_query(image, int(k), dict(filters or {}) or None)
    gallery = [(h.path, hit_caption(h)) for h in hits if h.path]
    results = {
        "k": int(k),
        "filters": dict(filters or {}),
        "query_ms": round(seconds * 1000, 1),
        "hits": [hit_record(h) for h in hits],
    }
    return gallery, results, status_text(info or searcher.describe(), seconds, len(hits))


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


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``"user:password"`` -> ``("user", "password")``; None stays None."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SimlibError("--auth takes USER:PASSWORD (e.g. --auth ana:s3cret)")
    return user, password


def launch_settings(searcher, artifacts: str | os.PathLike | None = None) -> dict[str, Any]:
    """The safety settings for ``Blocks.launch``: serve the gallery's folders and nothing else.

    ``allowed_paths`` holds only the folders of the gallery's images; the artifacts folder (model,
    index) is blocked even though it sits in the working directory; uploads are size-limited.
    """
    from simlib.gallery import gallery_folders

    blocked = [str(Path(artifacts).resolve())] if artifacts else []
    return {
        "allowed_paths": [str(p) for p in gallery_folders(searcher.index)],
        "blocked_paths": blocked,
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

    from simlib.model import model_config

    s = model_config(searcher.model).image_size
    return np.full((s, s, 3), 255, np.uint8)


# ----------------------------------------------------------------------------- the Blocks
def build_demo(
    searcher,
    k: int = DEFAULT_K,
    examples: Sequence[str] | None = None,
    title: str = "simlib: find similar images",
):
    """The Gradio app for ``searcher``: image in, gallery of the top-K most similar images out.

    Args:
        searcher: a :class:`simlib.search.Searcher`.
        k: the Top-K slider's starting value.
        examples: example query images (default: a few gallery images of different classes).
        title: the page title.

    Returns:
        A ``gr.Blocks`` with its queue set; its "search" API takes ``(image, k)`` (and optional
        filters) and returns ``(gallery, results, status)``.
    """
    import gradio as gr

    from simlib.gallery import example_images

    info = searcher.describe()
    searcher.query(_blank_image(searcher), 1)  # trace the model now, not on the first visitor's query
    fields = filter_fields(searcher.index.attribute_values())
    if examples is None:
        examples = example_images(searcher.index)

    def run_search(image, k, *filter_values):
        try:
            path = uploaded_image(image)
            return search(searcher, path, int(k), make_filters(list(fields), filter_values), info)
        except SimlibError as e:
            raise gr.Error(user_message(e, image), print_exception=False) from None

    # Name the API's parameters after the filters (Gradio reads the signature), not param_2, param_3...
    run_search.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in ["image", "k", *fields]]
    )

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
                button = gr.Button("Search", variant="primary", elem_id="search")
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[query], label="Example queries")
            with gr.Column(scale=2):
                results = gr.Gallery(
                    label="Most similar",
                    columns=4,
                    object_fit="contain",
                    height="auto",
                    elem_id="results",
                )
                status = gr.Markdown(status_text(info), label="status", elem_id="status")
                with gr.Accordion("Results as JSON", open=False):
                    details = gr.JSON(label="results")
        button.click(
            run_search,
            inputs=[query, top_k, *filter_widgets],
            outputs=[results, details, status],
            api_name="search",
            # The handler gets the upload as Gradio received it, undecoded: stock gr.Image opens it with
            # Pillow first, so a file that is not an image fails inside Gradio with a traceback. simlib
            # decodes instead (one path for gallery and queries: any mode, EXIF, pixel limit before
            # decoding) and a bad upload gets one clear message.
            preprocess=False,
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
    log: Callable[[str], None] | None = None,
) -> tuple[str, str | None]:
    """Launch ``demo`` without blocking, with the safety settings of :func:`launch_settings`.

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
            **launch_settings(searcher, artifacts),
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
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--share", action="store_true", help="also create a temporary public link (use with --auth)")
    p.add_argument(
        "--auth", metavar="USER:PASSWORD", default=os.environ.get("SIMLIB_AUTH"), help="require a login ($SIMLIB_AUTH)"
    )
    p.add_argument("-k", type=int, default=DEFAULT_K, help=f"results shown at first (default {DEFAULT_K})")
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
        from simlib.config import to_dict
        from simlib.gallery import open_gallery
        from simlib.model import model_config

        if args.index:
            from simlib.search import Searcher

            searcher = Searcher.load(args.index, model_dir=args.model, uri=args.uri)
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
        if is_untrained(to_dict(model_config(searcher.model))):
            _stderr("note: the model is untrained (random backbone): the page says so")
        demo = build_demo(searcher, k=args.k)
        serve(demo, searcher, host=args.host, port=args.port, share=args.share, auth=auth, artifacts=args.artifacts)
        _stderr(f"ready in {time.perf_counter() - t0:.1f} s; Ctrl-C stops the app")
    except SimlibError as e:
        _stderr(f"app_gradio.py: error: {e}")
        return 1
    demo.block_thread()  # until Ctrl-C, which closes the server
    return 0


if __name__ == "__main__":
    sys.exit(main())
