"""The embedding model: a backbone and a head, held with their config and fingerprint by an :class:`Embedder`.

- :mod:`simlib.model.embedder`: :class:`Embedder` (build, load, save, embed), :func:`open_embedder`.
- :mod:`simlib.model.embed`: batched embedding of a table through the tf.data pipeline.
- :mod:`simlib.model.network`: the Keras backbone and head (the only module that knows layer names).
- :mod:`simlib.model.weights`: the ``--weights`` policy and the ImageNet download.
"""

from simlib.model.embed import EmbedResult
from simlib.model.embedder import CONFIG_FILE, MODEL_FILE, Embedder, fingerprint_of, open_embedder
from simlib.model.weights import IMAGENET_NOTOP_FILE, bfloat16_supported, imagenet_weights_cached, resolve_weights

__all__ = [
    "CONFIG_FILE",
    "IMAGENET_NOTOP_FILE",
    "MODEL_FILE",
    "EmbedResult",
    "Embedder",
    "bfloat16_supported",
    "fingerprint_of",
    "imagenet_weights_cached",
    "open_embedder",
    "resolve_weights",
]
