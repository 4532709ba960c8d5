"""The demo app (``app_gradio.py``) served on a free local port for the length of a test."""

from __future__ import annotations

import contextlib
import importlib
import socket
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from tests.support import REPO


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_module() -> ModuleType:
    """``app_gradio``: a top-level script beside the package, not part of it."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("app_gradio")


@contextlib.contextmanager
def served_demo(searcher, *, serve: dict[str, Any] | None = None, **build: Any) -> Iterator[str]:
    """Build the app for ``searcher`` (``build``: ``build_demo`` options), serve it; yields its local URL.

    ``serve`` holds ``app.serve`` options (``artifacts``, ``auth``, ``allow_add``...); the port is a free one.
    The server is closed on the way out, whatever happened.
    """
    from simlib.errors import SimlibError

    app = app_module()
    demo = app.build_demo(searcher, **build)
    try:
        for attempt in range(3):
            try:
                url, _ = app.serve(demo, searcher, port=free_port(), log=lambda m: None, **(serve or {}))
                break
            except SimlibError as e:  # another test worker took the free port first: take another
                if "cannot listen" not in str(e) or attempt == 2:
                    raise
        yield url
    finally:
        demo.close()
