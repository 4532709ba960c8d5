"""Your own photos: index a real folder of any size resumably, keep the index in sync with it, review its duplicates.

- :mod:`simlib.photos.build`: :func:`index_folder`, chunked and resumable indexing of a folder.
- :mod:`simlib.photos.sync`: :func:`sync_index`, embedding only what changed in the folder (and
  :func:`sync_on_start` for an app).
- :mod:`simlib.photos.duplicates`: near-duplicate groups with a suggested keep, a contact sheet, moving copies aside.
- :mod:`simlib.photos.store`: the work folder beside an index (the file table, the chunks of a run).
- :mod:`simlib.photos.watch`: picking up new files while an app runs (``watchdog``).

Importing this package loads nothing heavy; TensorFlow loads when a model embeds.
"""
