"""The embedding model: a backbone and a head, held with their config and fingerprint by an :class:`Embedder`.

- :mod:`simlib.model.embedder`: :class:`Embedder` (build, load, save, embed), :func:`open_embedder`.
- :mod:`simlib.model.folder`: a saved model folder read without TensorFlow (:func:`read_model_folder`).
- :mod:`simlib.model.embed`: batched embedding of a table through the tf.data pipeline.
- :mod:`simlib.model.network`: the Keras backbone and head (the only module that knows layer names).
- :mod:`simlib.model.weights`: the ``--weights`` policy and the ImageNet download.

Importing this package loads neither Keras nor TensorFlow: they load when a model is built, loaded or run.
"""

from simlib.model.embed import EmbedResult
from simlib.model.embedder import Embedder, fingerprint_of, open_embedder
from simlib.model.folder import CONFIG_FILE, MODEL_FILE, MODEL_SUBDIR, SavedModel, read_model_folder, saved_model
from simlib.model.weights import IMAGENET_NOTOP_FILE, bfloat16_supported, imagenet_weights_cached, resolve_weights

__all__ = [
    "CONFIG_FILE",
    "IMAGENET_NOTOP_FILE",
    "MODEL_FILE",
    "MODEL_SUBDIR",
    "EmbedResult",
    "Embedder",
    "SavedModel",
    "bfloat16_supported",
    "fingerprint_of",
    "imagenet_weights_cached",
    "open_embedder",
    "read_model_folder",
    "resolve_weights",
    "saved_model",
]
