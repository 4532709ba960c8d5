"""The simlib demo: upload, webcam or clipboard image in, the top-K most similar gallery images out.

    python app_gradio.py                       # serve artifacts/ (built and cached on first start)
    python app_gradio.py --share --auth me:pw  # a public link, behind a password
    python app_gradio.py --allow-add           # visitors may add their image to the gallery
    python app_gradio.py --model DIR           # serve this trained model (default: the newest one found)

The model: ``--model DIR``, else the newest trained model under the artifacts folder (``model/``, or the
course's ``course/model_labels``), else a fresh one (``--weights``); the status line says which and why.
With an untrained model and a labelled gallery the page offers "Train a model on this gallery" (on
localhost by default; on a share link or a public address only with ``--allow-train``).

Click a result to see why it matched (similarity heat maps over both images) and mark it
"similar" / "not similar" (stored as training data in ``<artifacts>/feedback``). Near-duplicate
results are merged; with a calibrated threshold, weak results are labelled and "No good match"
is said plainly.

This is the entry point: it parses the options, opens the gallery (:func:`open_searcher`), builds a
:class:`simlib.app.GalleryService` (what the app does, testable without a server) and serves its
page (:func:`simlib.app.ui.build_demo`) with the safety settings of :func:`launch_settings`.
Nothing heavy is imported at module level: TensorFlow, FAISS and Gradio load inside the functions
that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Re-exported: the names notebooks, benchmarks and tests use from this module.
from simlib.app.inputs import ANY, make_filters, uploaded_image, user_message  # noqa: F401
from simlib.app.service import (  # noqa: F401
    COLLAPSE_AT,
    CONCURRENCY_LIMIT,
    DEFAULT_K,
    EXPLAIN_SIZE,
    MAX_FILTERS,
    MAX_K,
    PREFERRED_FILTERS,
    QUEUE_SIZE,
    UNTRAINED_COLLAPSE_AT,
    GalleryService,
    collapse_threshold,
    filter_fields,
    gallery_id,
    hit_record,
    is_untrained,
    status_text,
)
from simlib.errors import SimlibError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# Catalogue photos and phone pictures are well under this; anything larger is refused by Gradio before
# it reaches the model (simlib's own pixel limit then guards decoding).
MAX_UPLOAD = "10mb"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_demo(
    searcher,
    k: int = DEFAULT_K,
    examples: Sequence[str] | None = None,
    title: str | None = None,
    *,
    artifacts: str | os.PathLike | None = None,
    allow_add: bool = False,
    collapse: float | None = None,
    allow_train: bool = False,
    model_source: str | None = None,
):
    """The Gradio app for ``searcher``: a :class:`GalleryService` over it, warmed up, and its page.

    Args:
        searcher: a :class:`simlib.search.Searcher`, or a ready :class:`GalleryService` (the
            service options below are then its own).
        k: the Top-K slider's starting value.
        examples: example query images (default: a few gallery images of different classes).
        title: the page title (default: :data:`simlib.app.ui.TITLE`).
        artifacts: the artifacts (or index) folder the searcher was opened from: feedback goes to
            its ``feedback/`` and added images to its ``gallery_uploads/`` (see
            :func:`simlib.search.gallery.app_folders`). None: no feedback buttons, no adding.
        allow_add: offer "Add to gallery" (needs ``artifacts``): any visitor can then grow the gallery.
        collapse: the duplicate-collapse threshold (default: :func:`collapse_threshold`).
        allow_train: offer "Train a model on this gallery" when the model is untrained and the gallery
            labelled (it keeps the host's CPU busy for minutes: see :func:`train_allowed`).
        model_source: which model this is and why, for the status line (:func:`simlib.search.gallery.model_source`).

    Returns:
        A ``gr.Blocks`` with its queue set; its API is described in :mod:`simlib.app.ui`.
    """
    from simlib.app import ui

    if isinstance(searcher, GalleryService):
        service = searcher
    else:
        service = GalleryService(
            searcher,
            artifacts=artifacts,
            allow_add=allow_add,
            collapse=collapse,
            examples=examples,
            allow_train=allow_train,
            model_source=model_source,
        )
    service.warm_up()  # trace the model now, not on the first visitor's query
    return ui.build_demo(service, k=k, title=title or ui.TITLE)


def open_searcher(args: argparse.Namespace) -> tuple[Any, str]:
    """The searcher the options ask for, and one line saying what was opened.

    ``--index DIR``: that folder as it is (any backend); else the gallery cached in ``--artifacts``,
    built and cached there first when missing or when other images or another model are asked for
    (:func:`simlib.search.gallery.open_gallery`).
    """
    from simlib.search.gallery import open_gallery

    if args.mmap and (not args.index or args.allow_add):
        raise SimlibError(
            "--mmap needs --index DIR and cannot be combined with --allow-add (a mapped index is read-only)"
        )
    if args.index:
        from simlib.search import Searcher

        searcher = Searcher.load(args.index, model_dir=args.model, uri=args.uri, mmap=args.mmap)
        return searcher, f"loaded {args.index} ({searcher.describe()['backend']}, {len(searcher.index):,} images)"
    return open_gallery(
        args.artifacts,
        data=args.data,
        model_dir=args.model,
        weights=args.weights,
        image_size=args.image_size,
        embedding_dim=args.embedding_dim,
        label_column=args.label_column,
    )


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def train_allowed(host: str, share: bool, allow_train: bool) -> bool:
    """Whether the page may offer training: on by default only on localhost without a share link (any
    visitor could otherwise keep the host's CPU busy), anywhere with ``--allow-train``."""
    return allow_train or (host in LOCAL_HOSTS and not share)


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
    from simlib.app.ui import CSS
    from simlib.search.gallery import app_folders, gallery_folders

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
        "css": CSS,
    }


def share_failure(gradio_output: str) -> str:
    """Why Gradio made no share link, in one clause, from what ``launch()`` printed."""
    line = next((ln.strip() for ln in gradio_output.splitlines() if "could not create share link" in ln.lower()), "")
    detail = line.split(". ", 1)[1].rstrip(". ") if ". " in line else ""
    reason = "Gradio's share server cannot be reached from this machine (offline or behind a firewall?)"
    return reason + (f" [{detail}]" if detail else "")


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
            inline=False,  # no iframe in a notebook: it is blank in any saved copy once the server stops
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
    from simlib.cli import add_data_options, add_model_options

    p = argparse.ArgumentParser(prog="app_gradio.py", description="Serve the simlib similarity-search demo.")
    add_data_options(p)
    add_model_options(p)
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
    p.add_argument(
        "--allow-train",
        action="store_true",
        help="offer 'Train a model on this gallery' on a share link or a public --host too "
        "(by default only on localhost: training keeps the CPU busy for minutes)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Start the app: open (or build and cache) the gallery index, then serve it until Ctrl-C."""
    args = build_parser().parse_args(argv)
    from simlib.cli import quiet_tensorflow

    quiet_tensorflow()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    t0 = time.perf_counter()
    try:
        auth = parse_auth(args.auth)
        if not 1 <= args.k <= MAX_K:
            raise SimlibError(f"-k must be between 1 and {MAX_K}")
        searcher, note = open_searcher(args)
        _stderr(note)
        # Feedback and added images go beside the served index (see simlib.search.gallery.app_folders).
        folder = args.index or args.artifacts
        from simlib.search.gallery import model_source

        source = model_source(searcher, folder, args.model)
        _stderr(f"model: {source}")
        service = GalleryService(
            searcher,
            artifacts=folder,
            allow_add=args.allow_add,
            allow_train=train_allowed(args.host, args.share, args.allow_train),
            model_source=source,
        )
        if service.untrained:
            _stderr(
                "note: the model is untrained (random backbone): the page says so"
                + ("; it offers to train one on this gallery" if service.can_train else "")
            )
        demo = build_demo(service, k=args.k)
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
