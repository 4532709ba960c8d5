"""What a request sends, checked before the service sees it: the uploaded image, the filter widgets' values,
and the error text a visitor reads.

Gradio-free at import (``gradio.utils`` loads inside :func:`uploaded_image`), so ``app_gradio`` can
re-export these without loading Gradio.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simlib.errors import SimlibError

ANY = "any"


def make_filters(fields: Sequence[str], values: Sequence[Any]) -> dict[str, list[str]]:
    """``{attribute: [allowed values]}`` from the filter widgets' values (empty or "any" means no filter)."""
    filters = {}
    for field, value in zip(fields, values, strict=True):
        chosen = [value] if isinstance(value, str) else list(value or [])
        chosen = [str(v) for v in chosen if v not in (None, "", ANY)]
        if chosen:
            filters[field] = chosen
    return filters


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
    if not isinstance(payload, dict):
        raise SimlibError("the query image must be an uploaded file")
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


def _first_argument(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else next(iter(kwargs.values()), None)


def visitor_errors(image_of: Callable[[tuple, dict], Any] = _first_argument) -> Callable:
    """Decorate an event handler so that a :class:`SimlibError` reaches the visitor as one ``gr.Error`` line
    (no traceback; an uploaded file named by its own name, not its server path).

    Args:
        image_of: picks the query image out of the handler's ``(args, kwargs)`` (default: the first argument).
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)  # Gradio reads the signature through __wrapped__
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except SimlibError as e:
                import gradio as gr  # lazy: only a served page raises it

                raise gr.Error(user_message(e, image_of(args, kwargs)), print_exception=False) from None

        return handler

    return decorate
