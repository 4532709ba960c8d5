"""Serving the demo: open the gallery the options ask for, build the page, launch it with its safety settings.

``app_gradio.py`` parses the options and calls these; tests and notebook 06 call them directly:

    service = GalleryService(searcher, artifacts=DIR)
    demo = build_app(service)
    local_url, share_url = serve(demo, service, port=None)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simlib.app.service import DEFAULT_K, MAX_K, GalleryService
from simlib.app.style import CSS
from simlib.errors import SimlibError
from simlib.index import MANIFEST_FILE
from simlib.photos.sync import sync_on_start
from simlib.search.gallery import app_folders, gallery_folders, index_dir_in, model_source, open_gallery
from simlib.search.searcher import Searcher

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# Catalogue photos and phone pictures are well under this; anything larger is refused by Gradio before
# it reaches the model (simlib's own pixel limit then guards decoding).
MAX_UPLOAD = "10mb"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def open_searcher(args: argparse.Namespace, log: Callable[[str], None] = _stderr) -> tuple[Searcher, str]:
    """The searcher the app's options ask for, and one line saying what was opened.

    ``--index DIR``: that folder as it is (any backend); else the gallery cached in ``--artifacts``,
    built and cached there first when missing or when other images or another model are asked for
    (:func:`simlib.search.gallery.open_gallery`).
    """
    if args.mmap and (not args.index or args.allow_add):
        raise SimlibError(
            "--mmap needs --index DIR and cannot be combined with --allow-add (a mapped index is read-only)"
        )
    if args.index:
        searcher = Searcher.load(args.index, model_dir=args.model, uri=args.uri, mmap=args.mmap)
        return searcher, f"loaded {args.index} ({searcher.index.backend}, {len(searcher.index):,} images)"
    _sync_photo_folder(args, log)
    return open_gallery(
        args.artifacts,
        data=args.data,
        model_dir=args.model,
        weights=args.weights,
        image_size=args.image_size,
        embedding_dim=args.embedding_dim,
        label_column=args.label_column,
    )


def _sync_photo_folder(args: argparse.Namespace, log: Callable[[str], None] = _stderr) -> None:
    """A cached index of a photo folder (``--data DIR``, not a product set) is brought in line with the folder
    first, embedding only what changed, so the gallery opens without a rebuild (:mod:`simlib.photos.sync`)."""
    index_dir = index_dir_in(args.artifacts)
    data = Path(args.data).expanduser() if args.data else None
    cached = (index_dir / MANIFEST_FILE).is_file()
    if args.model or data is None or not data.is_dir() or (data / "styles.csv").is_file() or not cached:
        return  # --model: open_gallery re-indexes with it; a product set: its styles.csv says what it holds
    searcher = Searcher.load(index_dir)
    try:
        report = sync_on_start(searcher, index_dir, data)
    finally:
        searcher.close()
    if report is not None:
        log(f"{index_dir} and {data}: {report.summary()}")


def watch_folder(service: GalleryService, args: argparse.Namespace, log: Callable[[str], None] = _stderr):
    """With ``--watch``: sync the served gallery with its photo folder a few seconds after the folder changes,
    under the service's lock (:class:`simlib.photos.watch.FolderWatcher`); returns the started watcher."""
    from simlib.photos.watch import FolderWatcher

    if service.index_dir is None:
        raise SimlibError("--watch needs the gallery's index folder (--artifacts DIR or --index DIR)")
    watcher = FolderWatcher(
        service.searcher,
        service.index_dir,
        args.data,
        lock=service.lock,
        on_sync=lambda report: log(f"folder changed: {report.summary()}"),
    )
    return watcher.start()


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


def build_app(service: GalleryService, k: int = DEFAULT_K, title: str | None = None):
    """The Gradio page for ``service``, its model warmed up (traced now, not on the first visitor's query).

    Returns:
        A ``gr.Blocks`` with its queue set; its API is described in :mod:`simlib.app.ui`.
    """
    from simlib.app.ui import TITLE, build_demo  # lazy: Gradio

    service.warm_up()
    return build_demo(service, k=k, title=title or TITLE)


def launch_settings(service: GalleryService, mcp: bool = False) -> dict[str, Any]:
    """The safety settings for ``Blocks.launch``: serve the gallery's folders and nothing else.

    ``allowed_paths`` holds only the folders of the gallery's images, plus with ``allow_add`` the
    folder that added images are copied into (``<artifacts>/gallery_uploads``: they must be
    servable as soon as they are added, after launch). Everything else in the artifacts folder
    (index, model, feedback) is blocked even though it sits in the working directory; uploads
    are size-limited. With ``mcp``, the API is also served as an MCP server (``/gradio_api/mcp``): each
    endpoint is a tool an AI assistant can call (needs ``pip install "gradio[mcp]"``).
    """
    if mcp:
        _check_mcp()
    with service.lock:
        allowed = set(gallery_folders(service.searcher.index))
    blocked: set[Path] = set()
    artifacts = service.artifacts
    if artifacts is not None:
        folders = {k: v.resolve() for k, v in app_folders(artifacts).items()}
        if service.allow_add:
            folders["uploads"].mkdir(parents=True, exist_ok=True)
            allowed.add(folders["uploads"])
        blocked = {folders["index"], folders["feedback"]}
        # An artifacts folder is blocked whole but for the folders served from it; when an index
        # folder was given instead, the folder around it may hold anything (the gallery itself).
        if folders["index"] != artifacts.resolve() and folders["root"].is_dir():
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
        "mcp_server": mcp,
        "css": CSS,
    }


def share_failure(gradio_output: str) -> str:
    """Why Gradio made no share link, in one clause, from what ``launch()`` printed."""
    line = next((ln.strip() for ln in gradio_output.splitlines() if "could not create share link" in ln.lower()), "")
    detail = line.split(". ", 1)[1].rstrip(". ") if ". " in line else ""
    reason = "Gradio's share server cannot be reached from this machine (offline or behind a firewall?)"
    return reason + (f" [{detail}]" if detail else "")


def serve(
    demo,
    service: GalleryService,
    *,
    host: str = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    mcp: bool = False,
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
            inline=False,  # no iframe in a notebook: it is blank in any saved copy once the server stops
            **launch_settings(service, mcp=mcp),
        )
    local_url = demo.local_url
    size = len(service.searcher.index)
    log(f"serving {size:,} images on {local_url}" + (" (password required)" if auth else ""))
    if mcp:
        log(f"MCP server (tools for AI assistants): {local_url}gradio_api/mcp")
    share_url = demo.share_url if share else None
    if share_url:
        log(f"public link: {share_url} (expires within a week; stop the app to close it)")
    elif share:
        log(f"no public link: {share_failure(captured.getvalue())}; the app keeps serving on {local_url}")
    return local_url, share_url


def _check_mcp() -> None:
    """Fail with one line when Gradio's MCP support is not installed."""
    import importlib.util

    if importlib.util.find_spec("mcp") is None:
        raise SimlibError('--mcp needs Gradio\'s MCP support: pip install "gradio[mcp]"')


@contextlib.contextmanager
def _port_errors(host: str, port: int | None):
    try:
        yield
    except OSError as e:  # Gradio says "Cannot find empty port in range"
        raise SimlibError(f"cannot listen on {host}:{port} ({str(e).split('.')[0]}): pass --port N") from None


def run(args: argparse.Namespace, log: Callable[[str], None] = _stderr) -> int:
    """Serve the app the parsed options ask for until Ctrl-C; returns the exit code (1: a user error, said
    in one line)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    t0 = time.perf_counter()
    try:
        auth = parse_auth(args.auth)
        service = open_service(args, log)
        demo = build_app(service, k=args.k)
        serve(demo, service, host=args.host, port=args.port, share=args.share, auth=auth, mcp=args.mcp, log=log)
        if args.allow_add:
            log("note: --allow-add: visitors can add images to the gallery")
        if args.watch:
            watch_folder(service, args, log)
            log("watching the gallery's folder: added, changed and removed photos are picked up as they come")
        log(f"ready in {time.perf_counter() - t0:.1f} s; Ctrl-C stops the app")
    except SimlibError as e:
        log(f"app_gradio.py: error: {e}")
        return 1
    demo.block_thread()  # until Ctrl-C, which closes the server
    return 0


def open_service(args: argparse.Namespace, log: Callable[[str], None] = _stderr) -> GalleryService:
    """The :class:`GalleryService` the parsed options ask for: the gallery opened (or built and cached), the
    model's source said, feedback and added images kept beside the served index."""
    if not 1 <= args.k <= MAX_K:
        raise SimlibError(f"-k must be between 1 and {MAX_K}")
    searcher, note = open_searcher(args, log)
    log(note)
    folder = args.index or args.artifacts
    source = model_source(searcher, folder, args.model)
    log(f"model: {source}")
    service = GalleryService(
        searcher,
        artifacts=folder,
        allow_add=args.allow_add,
        allow_train=train_allowed(args.host, args.share, args.allow_train),
        model_source=source,
    )
    if service.untrained:
        log(
            "note: the model is untrained (random backbone): the page says so"
            + ("; it offers to train one on this gallery" if service.can_train else "")
        )
    return service
