"""The demo app: :class:`GalleryService` (what the app does, without a server) and ``ui`` (its Gradio page).

``app_gradio.py`` at the top of the repository is the entry point: it parses the options, opens the
gallery, builds a :class:`GalleryService` and serves ``simlib.app.ui.build_demo(service)``. Importing
this package loads neither Gradio nor TensorFlow; ``simlib.app.ui`` imports Gradio.
"""

from simlib.app.service import AddResult, Explanation, GalleryService, SearchResult

__all__ = ["AddResult", "Explanation", "GalleryService", "SearchResult"]
