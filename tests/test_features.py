"""The feature cache (simlib.model.features): cached features are the computed ones, another backbone, size
or image never hits, and a broken shard on disk is ignored (fast tier: the tiny backbone)."""

from __future__ import annotations

import numpy as np
import pytest

from simlib.config import ModelConfig
from simlib.evaluation import compare, model_embedder
from simlib.model import Embedder
from simlib.model import features as F
from simlib.train import fit
from tests.test_train_fast import QUICK, TINY, shapes_table

CONFIG = ModelConfig(backbone="tiny", image_size=32, embedding_dim=16, weights="none", pooling="grid", grid_size=2)


@pytest.fixture(autouse=True)
def no_global_cache():
    F.disable_feature_cache()
    yield
    F.disable_feature_cache()


def images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_cached_features_are_the_computed_ones_and_each_image_is_computed_once(tmp_path):
    e = Embedder.build(CONFIG)
    x = images(20)
    plain = F.pooled_features(e, x)
    cache = F.FeatureCache(tmp_path)
    first = F.pooled_features(e, x, cache=cache)
    assert np.array_equal(first, plain) and (cache.misses, cache.hits) == (20, 0)
    again = F.pooled_features(e, x[[5, 3, 3, 19]], cache=cache)  # a subset, reordered, with a repeat
    assert np.array_equal(again, plain[[5, 3, 3, 19]]) and (cache.misses, cache.hits) == (20, 4)
    fresh = F.FeatureCache(tmp_path)  # another process: from disk only
    assert np.array_equal(F.pooled_features(e, x, cache=fresh), plain) and fresh.misses == 0
    # a rebuilt embedder with the same backbone weights has the same key; its features come from the cache
    twin = Embedder.build(CONFIG)
    assert F.backbone_key(twin) == F.backbone_key(e)


def test_another_backbone_size_pooling_or_image_never_hits(tmp_path):
    cache = F.FeatureCache(tmp_path)
    e = Embedder.build(CONFIG)
    x = images(8)
    F.pooled_features(e, x, cache=cache)
    others = {
        "weights": Embedder.build(CONFIG, seed=1),
        "pooling": Embedder.build(CONFIG, pooling="avg"),
        "grid": Embedder.build(CONFIG, grid_size=1),
    }
    for name, other in others.items():
        assert F.backbone_key(other) != F.backbone_key(e), name
        before = cache.misses
        assert np.array_equal(F.pooled_features(other, x, cache=cache), F.pooled_features(other, x)), name
        assert cache.misses == before + 8, name
    bigger = Embedder.build(CONFIG, image_size=48)
    assert F.backbone_key(bigger) != F.backbone_key(e)
    changed = x.copy()
    changed[0, 0, 0, 0] ^= 1  # one bit of one pixel
    before = cache.misses
    F.pooled_features(e, changed, cache=cache)
    assert cache.misses == before + 1  # only the changed image is computed
    digests = F.image_digests(np.stack([x[0], changed[0]])) + F.image_digests(x[:1].astype(np.int16))
    assert len(set(digests)) == 3  # the same pixel values in another dtype are another image


def test_a_corrupt_or_partial_shard_is_ignored_and_writes_are_atomic(tmp_path):
    e = Embedder.build(CONFIG)
    x = images(12)
    plain = F.pooled_features(e, x)
    F.pooled_features(e, x[:6], cache=F.FeatureCache(tmp_path))
    F.pooled_features(e, x[6:], cache=F.FeatureCache(tmp_path))
    folder = tmp_path / F.backbone_key(e)
    shards = sorted(folder.glob("*" + F.SHARD_SUFFIX))
    assert len(shards) == 2 and not list(folder.glob(".tmp-*"))  # no temporary file left behind
    shards[0].write_bytes(shards[0].read_bytes()[:100])  # truncated: as if a writer had died (no rename)
    data = bytearray(shards[1].read_bytes())
    data[-200] ^= 0xFF  # one flipped byte in the features: the checksum fails
    shards[1].write_bytes(bytes(data))
    (folder / ("junk" + F.SHARD_SUFFIX)).write_bytes(b"not a shard")
    assert F.read_shard(shards[0]) is None and F.read_shard(folder / ("junk" + F.SHARD_SUFFIX)) is None
    cache = F.FeatureCache(tmp_path)
    assert np.array_equal(F.pooled_features(e, x, cache=cache), plain)
    assert cache.misses == 12  # nothing was taken from the broken shards


def test_training_and_evaluation_give_the_same_results_with_the_cache(tmp_path):
    table = shapes_table(n_classes=8, per_class=6)
    plain = fit(table, TINY, QUICK, progress=False)
    F.use_feature_cache(tmp_path / "features")
    cached = fit(table, TINY, QUICK, progress=False)
    again = fit(table, TINY, QUICK, progress=False)  # every backbone feature from the cache now
    cache = F.active_cache()
    assert cache.hits > 0
    for run in (cached, again):
        assert run.history["loss"] == pytest.approx(plain.history["loss"], rel=1e-5)
        assert run.best_val_recall == pytest.approx(plain.best_val_recall)
    x = images(10)
    assert np.allclose(model_embedder(plain.embedder)(x), plain.embedder.embed_batch(x), atol=1e-5)
    with_cache = compare(table, {"trained": plain.embedder}, splits=("image",), near_duplicates=False)
    F.disable_feature_cache()
    without = compare(table, {"trained": plain.embedder}, splits=("image",), near_duplicates=False)
    for a, b in zip(with_cache.rows, without.rows, strict=True):
        assert a["recall@1"] == pytest.approx(b["recall@1"]) and a["map@r"] == pytest.approx(b["map@r"], abs=1e-6)
