"""Search: a model and the index it built, and what builds on them.

- :mod:`simlib.search.searcher`: :class:`Searcher` (query, add, remove, save, load, its threshold).
- :mod:`simlib.search.info`: :class:`GalleryInfo`, what a served gallery is (``Searcher.info()``).
- :mod:`simlib.search.hit`: :class:`Hit` and how listings show it.
- :mod:`simlib.search.tables`: table rows <-> index records.
- :mod:`simlib.search.calibrate`: the calibrated "good match" threshold.
- :mod:`simlib.search.gallery`: the gallery an app serves (:func:`build_gallery`, open and cache, its folders).
- :mod:`simlib.search.explain`: similarity heat maps.
- :mod:`simlib.search.feedback`: user verdicts on results, stored for training.
"""

from simlib.search.calibrate import calibrate_threshold
from simlib.search.gallery import GalleryBuild, app_folders, build_gallery, gallery_folders, open_gallery
from simlib.search.hit import Hit, format_hits, no_good_match, score_text
from simlib.search.info import GalleryInfo
from simlib.search.searcher import Searcher
from simlib.search.tables import index_table, table_records

__all__ = [
    "GalleryBuild",
    "GalleryInfo",
    "Hit",
    "Searcher",
    "app_folders",
    "build_gallery",
    "calibrate_threshold",
    "format_hits",
    "gallery_folders",
    "index_table",
    "no_good_match",
    "open_gallery",
    "score_text",
    "table_records",
]
