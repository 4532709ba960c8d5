"""The demo app served on a free local port for the length of a test, as ``app_gradio.py`` serves it."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_demo(
    searcher, *, k: int = 5, auth: tuple[str, str] | None = None, mcp: bool = False, **service: Any
) -> Iterator[str]:
    """Serve ``searcher`` as the app does (a :class:`GalleryService` with ``service`` options, its page with
    Top-K ``k``, behind ``auth``, with an MCP server if ``mcp``) on a free port; yields its local URL.

    The server is closed on the way out, whatever happened."""
    from simlib.app import GalleryService, build_app, serve
    from simlib.errors import SimlibError

    gallery = GalleryService(searcher, **service)
    demo = build_app(gallery, k=k)
    try:
        for attempt in range(3):
            try:
                url, _ = serve(demo, gallery, port=free_port(), auth=auth, mcp=mcp, log=lambda m: None)
                break
            except SimlibError as e:  # another test worker took the free port first: take another
                if "cannot listen" not in str(e) or attempt == 2:
                    raise
        yield url
    finally:
        demo.close()
