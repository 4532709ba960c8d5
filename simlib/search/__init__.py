"""Search: a model and the index it built, and what builds on them.

- :mod:`simlib.search.searcher`: :class:`Searcher` (query, add, remove, save, load).
- :mod:`simlib.search.hit`: :class:`Hit` and how listings show it.
- :mod:`simlib.search.tables`: table rows <-> index records.
- :mod:`simlib.search.calibrate`: the calibrated "good match" threshold.
- :mod:`simlib.search.gallery`: the gallery an app serves (open, build and cache, its folders).
- :mod:`simlib.search.explain`: similarity heat maps.
- :mod:`simlib.search.feedback`: user verdicts on results, stored for training.
"""

from simlib.search.calibrate import calibrate_threshold
from simlib.search.gallery import app_folders, gallery_folders, open_gallery
from simlib.search.hit import Hit, format_hits, no_good_match, score_text
from simlib.search.searcher import Searcher
from simlib.search.tables import index_table, table_records

__all__ = [
    "Hit",
    "Searcher",
    "app_folders",
    "calibrate_threshold",
    "format_hits",
    "gallery_folders",
    "index_table",
    "no_good_match",
    "open_gallery",
    "score_text",
    "table_records",
]
