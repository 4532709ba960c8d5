"""Images in: one table type, the layouts simlib reads, safe decoding, splits and the tf.data pipeline.

- :mod:`simlib.data.table`: :class:`ImageTable`, :func:`split_table`, :func:`sample_per_class`.
- :mod:`simlib.data.sources`: the data root and the loaders (product set, class folders, flat folder,
  Fashion-MNIST), :func:`materialize`.
- :mod:`simlib.data.decode`: :func:`open_image`, the one place an untrusted image is decoded.
- :mod:`simlib.data.pipeline`: :func:`image_pipeline` and :func:`load_images` (TensorFlow, loaded when called).
- :mod:`simlib.data.product_subset`: the course's 4,888-image subset rebuilt from a Kaggle download.
"""

from simlib.data.decode import MAX_PIXELS, open_image, prepare_image, resize_image
from simlib.data.pipeline import DecodeErrors, image_pipeline, load_images
from simlib.data.sources import (
    FASHION_MNIST_CLASSES,
    IMAGE_EXTENSIONS,
    PRODUCT_SET_DIR,
    cache_dir,
    collect_images,
    default_data_spec,
    find_data_root,
    list_images,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
    load_product_set,
    materialize,
)
from simlib.data.table import ImageTable, sample_per_class, split_table

__all__ = [
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "PRODUCT_SET_DIR",
    "DecodeErrors",
    "ImageTable",
    "cache_dir",
    "collect_images",
    "default_data_spec",
    "find_data_root",
    "image_pipeline",
    "list_images",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "load_images",
    "load_product_set",
    "materialize",
    "open_image",
    "prepare_image",
    "resize_image",
    "sample_per_class",
    "split_table",
]
