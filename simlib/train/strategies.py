"""The two training strategies: :class:`FrozenHead` (head on cached backbone features) and
:class:`FineTune` (backbone layers and head on augmented images)."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from simlib.model.features import batched, pooled_features, pooled_features_fn
from simlib.train.base import Strategy

__all__ = ["STRATEGIES", "FineTune", "FrozenHead", "augmented_views", "batched", "pooled_features_fn"]


def augmented_views(images: np.ndarray, n_views: int, seed: int, size: int, batch: int = 256) -> list[np.ndarray]:
    """The images themselves, then ``n_views - 1`` augmented copies (one seeded augmenter per view)."""
    from simlib.train.samplers import Augmenter

    out = [images]
    for v in range(1, n_views):
        aug = Augmenter(size, seed=seed * 1000 + v)
        out.append(np.concatenate([aug(images[i : i + batch]) for i in range(0, len(images), batch)]))
    return out


class FrozenHead(Strategy):
    """The backbone stays as it is: its pooled features are computed once per image and view (and taken
    from the feature cache, :mod:`simlib.model.features`, when one is on), the head's fitted layers
    (standardisation, PCA) are applied to them once, and the layers that train (hidden layer,
    projection) train on the result.

    Training them trains the embedder's head itself (they share layers), so the saved model
    is the whole embedder, usable everywhere an untrained one is.
    """

    name: ClassVar[str] = "frozen head on cached features"

    def prepare(self) -> tuple[Any, Any]:
        import tensorflow as tf

        from simlib.model.network import adapt_head, split_head, split_trainable
        from simlib.train.samplers import pk_batches

        tc, data = self.tc, self.data
        t0 = time.perf_counter()
        self.say(f"computing the backbone's features of {len(data.images):,} train images × {tc.n_views} views")
        views = augmented_views(data.images, tc.n_views, tc.seed, self.embedder.image_size)
        pooled = np.concatenate(
            [
                pooled_features(self.embedder, v, progress=self.progress and f"backbone features, view {i + 1}")
                for i, v in enumerate(views)
            ]
        )
        if not self.embedder.config.trained:  # a trained head keeps the statistics it was trained with
            adapt_head(self.embedder.head, pooled[: len(data.images)], seed=tc.seed)
        # the head's fitted layers (standardisation, PCA) do not train: apply them once, train the tail on their
        # outputs (512 PCA components instead of 16,384 grid features for a random backbone's head)
        _, rest = split_head(self.embedder.head)
        fixed, self._tail = split_trainable(rest)
        self._fixed_fn = None
        if fixed is not None:
            self._fixed_fn = tf.function(lambda f: fixed(f, training=False), reduce_retracing=True)
        self._train_feats = self._fix(pooled)
        del pooled
        self.say(
            f"cached backbone features of {len(data.images)} train images × {tc.n_views} views "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        # views of one image share its id: in self mode P×K is then P images × K of their views
        ids = np.tile(data.ids, tc.n_views)
        batches = pk_batches(ids, data.p, data.k, tc.epochs * data.steps, seed=tc.seed)
        feats_t, ids_t = tf.constant(self._train_feats), tf.constant(ids)
        ds = tf.data.Dataset.from_tensor_slices(batches)
        ds = ds.map(lambda b: (tf.gather(feats_t, b), tf.gather(ids_t, b))).prefetch(2)
        self._tail_fn = tf.function(lambda f: self._tail(f, training=False), reduce_retracing=True)
        return self._tail, ds

    def _fix(self, pooled: np.ndarray) -> np.ndarray:
        """The head's fixed layers applied to pooled features (the tail's input)."""
        return pooled if self._fixed_fn is None else batched(self._fixed_fn, pooled, batch=1024)

    def encode(self, images: np.ndarray) -> np.ndarray:
        return self._fix(pooled_features(self.embedder, images))

    def encode_train(self, rows: np.ndarray) -> np.ndarray:
        return self._train_feats[rows]  # the first view's rows are the images themselves

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        return np.asarray(self._tail_fn(inputs))


class FineTune(Strategy):
    """Backbone layers train too, on augmented images: ``partial`` (the last stage and the head;
    batch-normalisation statistics stay frozen) or ``full`` (everything)."""

    name: ClassVar[str] = "fine-tuning on images"
    checkpoint_each_best: ClassVar[bool] = True

    def prepare(self) -> tuple[Any, Any]:
        import tensorflow as tf

        from simlib.model.network import adapt_head, head_needs_adapting, set_backbone_trainable
        from simlib.train.samplers import Augmenter, pk_batches

        tc, data, embedder = self.tc, self.data, self.embedder
        size = embedder.image_size
        set_backbone_trainable(embedder.backbone, embedder.config, "all" if tc.backbone == "full" else "last")
        if head_needs_adapting(embedder.config) and not embedder.config.trained:
            sample = data.images[np.random.default_rng(tc.seed).permutation(len(data.images))[:2000]]
            adapt_head(embedder.head, batched(pooled_features_fn(embedder), sample), seed=tc.seed)
        p, k = data.p, data.k
        batches = pk_batches(data.ids, p, k, tc.epochs * data.steps, seed=tc.seed)
        augment = Augmenter(size, seed=tc.seed)
        images, ids = data.images, data.ids

        def gen():
            for b in batches:
                yield augment(images[b]).astype(np.float32), ids[b]

        ds = tf.data.Dataset.from_generator(
            gen,
            output_signature=(
                tf.TensorSpec((p * k, size, size, 3), tf.float32),
                tf.TensorSpec((p * k,), tf.int64),
            ),
        ).prefetch(2)
        return embedder.model, ds

    def encode(self, images: np.ndarray) -> np.ndarray:
        return images  # images are the trainable model's input

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        return np.concatenate([self.embedder.embed_batch(inputs[i : i + 128]) for i in range(0, len(inputs), 128)])


STRATEGIES: dict[str, type[Strategy]] = {"frozen": FrozenHead, "partial": FineTune, "full": FineTune}
