"""Kept for the import path the README and older scripts use: the index interface lives in :mod:`simlib.index`."""

from simlib.index import BACKENDS, IndexBackend, create_index, open_index

__all__ = ["BACKENDS", "IndexBackend", "create_index", "open_index"]
