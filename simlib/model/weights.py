"""The backbone's starting weights: ImageNet (cached or downloaded), none, or a local file."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from simlib.errors import SimlibError

IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Long enough for a real download to start, short enough that a firewalled machine fails fast.
NETWORK_TIMEOUT_S = 15


def imagenet_weights_file() -> Path:
    """Where Keras caches the ResNet50 ImageNet (no-top) weights (``$KERAS_HOME/models``)."""
    from keras.src.backend.config import keras_home  # lazy: Keras

    return Path(keras_home()).expanduser() / "models" / IMAGENET_NOTOP_FILE


def imagenet_weights_cached() -> bool:
    """True when Keras already has the ResNet50 ImageNet (no-top) weights in its cache."""
    return imagenet_weights_file().is_file()


def resolve_weights(weights: str, warn: bool = True) -> str:
    """Turn the user's weights policy into what the backbone is built with.

    Args:
        weights: "auto" (ImageNet when cached or downloadable, else untrained with a warning),
            "imagenet" (fail fast when it cannot be had), "none", or a path to a local
            ``.h5`` / ``.weights.h5`` file.
        warn: print the one-line warning when "auto" falls back to an untrained backbone.

    Returns:
        "imagenet", "none" or an absolute file path.
    """
    w = str(weights).strip()
    if w.lower() in ("none", "random", ""):
        return "none"
    if w.lower() in ("imagenet", "auto"):
        if imagenet_weights_cached():
            return "imagenet"
        try:
            _download_imagenet_weights()
            return "imagenet"
        except SimlibError as e:
            if w.lower() == "imagenet":
                raise
            if warn:
                print(f"warning: {e}; using an untrained (random) backbone instead", file=sys.stderr)
            return "none"
    path = Path(w).expanduser()
    if not path.is_file():
        raise SimlibError(f"weights file {path} not found: use --weights imagenet, none or a path to a .h5 file")
    if not path.name.endswith(".h5"):
        raise SimlibError(f"weights file {path} must be a Keras .h5 or .weights.h5 file")
    return str(path.resolve())


def _download_imagenet_weights() -> None:
    """Fetch the weights into Keras' cache with Keras' own downloader, failing fast offline."""
    import keras  # lazy: Keras
    from keras.src.applications.resnet import BASE_WEIGHTS_PATH, WEIGHTS_HASHES

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NETWORK_TIMEOUT_S)
    try:
        keras.utils.get_file(
            IMAGENET_NOTOP_FILE,
            BASE_WEIGHTS_PATH + IMAGENET_NOTOP_FILE,
            cache_subdir="models",
            file_hash=WEIGHTS_HASHES["resnet50"][1],
        )
    except Exception as e:  # Keras wraps every network error in a bare Exception
        raise SimlibError(
            "cannot download the ResNet50 ImageNet weights (no network?): "
            "use --weights none for an untrained backbone, or --weights PATH for a local .h5 file"
            f" [{type(e).__name__}: {str(e)[:100]}]"
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def bfloat16_supported() -> bool:
    """True when bfloat16 maths runs natively: a GPU, or a CPU with AVX-512 BF16 or AMX-BF16.

    Elsewhere TensorFlow emulates bfloat16 and ``precision="mixed_bfloat16"`` is slower than float32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    if {"avx512_bf16", "amx_bf16"} & set(flags):
        return True
    import tensorflow as tf  # lazy: TensorFlow

    return bool(tf.config.list_physical_devices("GPU"))
