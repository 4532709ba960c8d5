"""The demo app: what it does (:mod:`~simlib.app.service`), its page (:mod:`~simlib.app.ui`, Gradio) and how it
is served (:mod:`~simlib.app.server`).

``app_gradio.py`` at the top of the repository parses the options and calls :func:`simlib.app.server.run`.
Importing this package loads neither Gradio nor TensorFlow; ``simlib.app.ui`` imports Gradio.
"""

from simlib.app.results import AddResult, Explanation, SearchResult
from simlib.app.server import build_app, open_service, serve
from simlib.app.service import GalleryService

__all__ = ["AddResult", "Explanation", "GalleryService", "SearchResult", "build_app", "open_service", "serve"]
