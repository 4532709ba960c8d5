"""The embedding model: a backbone and a head, held with their config and fingerprint by an :class:`Embedder`."""

from simlib.model.embedder import CONFIG_FILE, MODEL_FILE, Embedder, fingerprint_of, open_embedder
from simlib.model.weights import IMAGENET_NOTOP_FILE, bfloat16_supported, imagenet_weights_cached, resolve_weights


def build_embedding_model(config=None, **overrides) -> Embedder:
    """Build a fresh :class:`Embedder` (``Embedder.build``; the name the course uses)."""
    return Embedder.build(config, **overrides)


def load_model(directory) -> Embedder:
    """Load a saved :class:`Embedder` (``Embedder.load``)."""
    return Embedder.load(directory)


__all__ = [
    "CONFIG_FILE",
    "IMAGENET_NOTOP_FILE",
    "MODEL_FILE",
    "Embedder",
    "bfloat16_supported",
    "build_embedding_model",
    "fingerprint_of",
    "imagenet_weights_cached",
    "load_model",
    "open_embedder",
    "resolve_weights",
]
