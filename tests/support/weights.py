"""A stand-in for the ResNet50 ImageNet weights file, where Keras' cache looks for it.

Keras' own ResNet50 without top, freshly initialised from a seed (features as varied as a random
backbone's, so the course's checks hold on them), saved in the legacy ``.h5`` layout of
``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``: with it in ``$KERAS_HOME/models``,
``--weights auto`` and ``imagenet`` resolve to ImageNet without any network, as on a learner's
machine that downloaded the real file. Imports Keras only when called.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_standin_imagenet_weights(keras_home: str | Path, seed: int = 5) -> list[np.ndarray]:
    """Write the stand-in file into ``keras_home/models`` and return the weights it holds."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    from simlib.model import IMAGENET_NOTOP_FILE

    keras.utils.set_random_seed(seed)
    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    models = Path(keras_home) / "models"
    models.mkdir(parents=True, exist_ok=True)
    with h5py.File(models / IMAGENET_NOTOP_FILE, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    return source.get_weights()
