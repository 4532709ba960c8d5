import dataclasses
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from simlib.config import ModelConfig
from simlib.errors import SimlibError
from simlib.model import Embedder, fingerprint_of, resolve_weights
from tests.support import REPO
from tests.support.legacy import probe_batch, write_legacy_model

TINY = ModelConfig(image_size=32, embedding_dim=16, weights="none", backbone="tiny")


def test_embedder_outputs_unit_vectors_of_the_configured_size(tiny_model):
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    y = tiny_model.embed_batch(x)
    assert y.shape == (3, 32) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
    assert tiny_model.feature_shape == (1, 1, 2048)  # ResNet50's last stage at 32 px
    assert tiny_model.config.image_size == tiny_model.image_size == 32


def test_backbone_and_head_compose_to_the_embedding():
    e = Embedder.build(TINY)
    x = probe_batch(32)
    np.testing.assert_allclose(np.asarray(e.head(e.backbone(x))), e.embed_batch(x.astype(np.uint8)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(e.model(x)), e.embed_batch(x.astype(np.uint8)), atol=1e-6)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b = Embedder.build(TINY), Embedder.build(TINY)
    other = Embedder.build(dataclasses.replace(TINY, seed=1))
    assert a.fingerprint == b.fingerprint != other.fingerprint
    assert a.fingerprint == fingerprint_of(a.config, [*a.backbone.weights, *a.head.weights])


def test_save_and_load_give_identical_embeddings_and_the_saved_fingerprint(tmp_path):
    e = Embedder.build(dataclasses.replace(TINY, head_hidden=8, head_norm=True))
    e.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["fingerprint"] == e.fingerprint
    loaded = Embedder.load(tmp_path / "m")
    x = probe_batch(32).astype(np.uint8)
    np.testing.assert_array_equal(loaded.embed_batch(x), e.embed_batch(x))
    assert loaded.config == e.config and loaded.fingerprint == e.fingerprint
    # The fingerprint is read back, not recomputed: a folder says which model it holds.
    meta["fingerprint"] = "0123456789abcdef"
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    assert Embedder.load(tmp_path / "m").fingerprint == "0123456789abcdef"


def test_clone_is_independent_of_the_original():
    e = Embedder.build(dataclasses.replace(TINY, head_norm=True))
    copy = e.clone()
    x = probe_batch(32).astype(np.uint8)
    before = e.embed_batch(x)
    np.testing.assert_array_equal(copy.embed_batch(x), before)
    copy.head.set_weights([w + 1.0 for w in copy.head.get_weights()])
    np.testing.assert_array_equal(e.embed_batch(x), before)  # the original did not move


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(SimlibError, match="not a simlib model folder"):
        Embedder.load(tmp_path)
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    (tmp_path / "config.json").write_text('{"config": {}}')
    with pytest.raises(SimlibError, match="cannot load the model"):
        Embedder.load(tmp_path)


def test_tiny_backbone_is_rejected_nowhere_and_unknown_ones_are():
    with pytest.raises(SimlibError, match="backbone must be"):
        ModelConfig(backbone="vgg")
    assert Embedder.build(TINY).feature_shape == (8, 8, 32)


@pytest.mark.integration  # builds ResNet50s
@pytest.mark.parametrize("head", [{}, {"head_hidden": 16, "head_norm": True}])
def test_model_folders_written_by_simlib_0_1_still_load(tmp_path, head):
    config = ModelConfig(image_size=32, embedding_dim=32, weights="none", seed=3, **head)
    expected = write_legacy_model(tmp_path / "old", config)
    loaded = Embedder.load(tmp_path / "old")
    np.testing.assert_allclose(loaded.embed_batch(probe_batch(32).astype(np.uint8)), expected, atol=1e-5)
    saved = json.loads((tmp_path / "old" / "config.json").read_text())["fingerprint"]
    assert loaded.fingerprint == saved  # indexes built by it stay paired with it
    assert fingerprint_of(loaded.config, [*loaded.backbone.weights, *loaded.head.weights]) == saved


def test_weights_path_policy(tmp_path):
    assert resolve_weights("none") == "none"
    with pytest.raises(SimlibError, match="not found"):
        resolve_weights(str(tmp_path / "w.h5"))
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(SimlibError, match=r"\.h5"):
        resolve_weights(str(tmp_path / "w.txt"))


def test_local_weights_file_is_loaded(tmp_path, tiny_model):
    # A backbone weights file written by Keras, as a user would bring from another machine.
    path = tmp_path / "resnet50_notop.weights.h5"
    tiny_model.backbone.save_weights(path)
    e = Embedder.build(ModelConfig(image_size=32, embedding_dim=32, weights=resolve_weights(str(path))))
    for a, b in zip(tiny_model.backbone.get_weights(), e.backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.integration  # a real process importing TensorFlow
def test_imagenet_without_network_fails_fast_and_auto_falls_back(tmp_path):
    """Runs the real Keras download in a clean process (no network here: it must fail within seconds)."""
    code = (
        "import sys, time\n"
        "from simlib.model import resolve_weights, imagenet_weights_cached\n"
        "from simlib.errors import SimlibError\n"
        "if imagenet_weights_cached(): print('CACHED'); sys.exit(0)\n"
        "t = time.time()\n"
        "try:\n    resolve_weights('imagenet'); print('DOWNLOADED')\n"
        "except SimlibError as e:\n    print('ERR', round(time.time() - t, 1), e)\n"
        "print('AUTO', resolve_weights('auto'))\n"
    )
    env = {"KERAS_HOME": str(tmp_path / "keras"), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    if "DOWNLOADED" in out.stdout:
        pytest.skip("this machine has internet: the offline path cannot be exercised")
    assert "ERR" in out.stdout, out.stderr
    assert "--weights none" in out.stdout
    assert "AUTO none" in out.stdout
    assert "using an untrained (random) backbone" in out.stderr
    assert out.stderr.count("warning:") == 1
    assert time.time() - t0 < 60


def test_mixed_bfloat16_keeps_float32_unit_outputs_close_to_float32(tiny_model, tmp_path):
    import keras

    before = keras.config.dtype_policy().name
    bf16 = Embedder.build(ModelConfig(image_size=32, embedding_dim=32, weights="none", precision="mixed_bfloat16"))
    assert keras.config.dtype_policy().name == before  # the global policy is restored
    assert bf16.backbone.get_layer("conv1_conv").compute_dtype == "bfloat16"
    assert bf16.with_precision("float32").fingerprint == tiny_model.fingerprint  # same weights
    assert tiny_model.with_precision("float32") is tiny_model
    x = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    a, b = tiny_model.embed_batch(x), bf16.embed_batch(x)
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, rtol=1e-5)
    assert (a * b).sum(1).min() > 0.99  # bfloat16 rounding, not a different model
    assert not np.array_equal(a, b)
    bf16.save(tmp_path / "bf16")
    loaded = Embedder.load(tmp_path / "bf16")
    assert loaded.config.precision == "mixed_bfloat16"
    np.testing.assert_array_equal(loaded.embed_batch(x), b)


def test_mixed_bfloat16_warns_where_the_cpu_would_emulate_it(monkeypatch, capsys):
    import simlib.model.embedder as embedder

    monkeypatch.setattr(embedder, "bfloat16_supported", lambda: False)
    Embedder.build(dataclasses.replace(TINY, precision="mixed_bfloat16"))
    assert "no native bfloat16" in capsys.readouterr().err
    monkeypatch.setattr(embedder, "bfloat16_supported", lambda: True)
    Embedder.build(dataclasses.replace(TINY, precision="mixed_bfloat16"))
    assert "bfloat16" not in capsys.readouterr().err


def test_imagenet_weights_in_keras_cache_are_picked_up_by_auto_and_imagenet(tmp_path, monkeypatch, tiny_model):
    """The file `--weights imagenet` caches, in Keras' layout, where Keras' cache looks: no network needed."""
    import keras.src.backend.config as keras_config

    from simlib.model import imagenet_weights_cached
    from tests.support.weights import write_standin_imagenet_weights

    # Keras reads $KERAS_HOME once, at import: point the running process's cache at a fresh folder
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras"))
    assert not imagenet_weights_cached()
    # a stand-in for the real file: Keras' own ResNet50 without top, saved in the legacy .h5 layout
    standin = write_standin_imagenet_weights(tmp_path / "keras")
    assert imagenet_weights_cached()
    assert resolve_weights("auto") == resolve_weights("imagenet") == "imagenet"
    e = Embedder.build(ModelConfig(image_size=32, embedding_dim=32, weights="auto"))
    assert e.config.weights == "imagenet"
    for a, b in zip(standin, e.backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert e.fingerprint != tiny_model.fingerprint


GRID_PCA = dataclasses.replace(
    TINY, feature_stage=1, pooling="grid", grid_size=4, head_norm=True, head_pca=24, embedding_dim=8
)


def test_grid_pooling_keeps_layout_and_an_earlier_stage_shortens_the_backbone():
    e = Embedder.build(GRID_PCA)
    assert e.feature_shape == (16, 16, 16)  # tiny_conv1 at 32 px: stride 2
    assert [layer.name for layer in e.backbone.layers][-1] == "tiny_conv1"
    from simlib.model.network import split_head

    pool, _ = split_head(e.head)
    maps = np.zeros((1, 16, 16, 16), np.float32)
    maps[0, :4, :4, 0] = 1.0  # a feature present only in the top-left cell
    pooled = np.asarray(pool(maps)).reshape(4, 4, 16)
    assert pooled[0, 0, 0] == 1.0 and pooled[..., 0].sum() == 1.0  # it stays in its cell
    with pytest.raises(SimlibError, match="feature_stage"):
        ModelConfig(backbone="tiny", feature_stage=4)
    with pytest.raises(SimlibError, match="head_pca"):
        ModelConfig(embedding_dim=64, head_pca=32)


def test_pca_head_is_a_shrunk_whitened_pca_of_the_standardised_features():
    from simlib.model.network import adapt_head

    e = Embedder.build(GRID_PCA)
    rng = np.random.default_rng(0)
    pooled = (rng.standard_normal((200, 16 * 16)) @ rng.standard_normal((256, 256)) * 3 + 5).astype(np.float32)
    adapt_head(e.head, pooled)
    z = np.asarray(e.head.get_layer("pca")(e.head.get_layer("feature_norm")(pooled)), np.float64)
    # the reference: standardise, SVD, keep 24 components, divide by sqrt(variance + mean variance)
    x = (pooled - pooled.mean(0)) / pooled.std(0)
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    var = s[:24] ** 2 / len(x)
    ref = (x - x.mean(0)) @ vt[:24].T / np.sqrt(var + var.mean())
    np.testing.assert_allclose(np.abs(z), np.abs(ref), atol=2e-3)  # components agree up to sign
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    # the projection starts as the identity on the leading components
    np.testing.assert_array_equal(np.asarray(e.head.get_layer("projection").kernel), np.eye(24, 8))


@pytest.mark.parametrize("config", [GRID_PCA, TINY], ids=["standardise+pca", "projection-only"])
def test_the_fixed_layers_and_the_tail_compose_to_the_head_and_share_its_weights(config):
    from simlib.model.network import adapt_head, split_head, split_trainable

    e = Embedder.build(config)
    _, rest = split_head(e.head)
    dim = rest.input.shape[-1]
    pooled = (np.random.default_rng(2).standard_normal((60, dim)) * 2 + 1).astype(np.float32)
    adapt_head(e.head, pooled)
    fixed, tail = split_trainable(rest)
    if config.head_pca:
        assert [layer.name for layer in fixed.layers[1:]] == ["feature_norm", "pca"]
        assert not fixed.trainable_weights and tail.input.shape[-1] == config.head_pca
    else:
        assert fixed is None  # nothing fitted: the tail is the whole rest
    inputs = pooled if fixed is None else np.asarray(fixed(pooled))
    np.testing.assert_allclose(np.asarray(tail(inputs)), np.asarray(rest(pooled)), atol=1e-5)
    # training the tail trains the head: its projection is the head's own layer
    assert tail.get_layer("projection") is e.head.get_layer("projection")


def test_new_pooling_options_round_trip_through_save_load_and_the_index_fingerprint(tmp_path):
    from simlib.data import ImageTable
    from simlib.model.network import adapt_head, split_head
    from simlib.search import Searcher

    e = Embedder.build(GRID_PCA)
    images = np.random.default_rng(1).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    pool, _ = split_head(e.head)
    adapt_head(e.head, np.asarray(pool(e.backbone(images.astype("float32")))))
    e = Embedder.assemble(e.backbone, e.head, e.config)  # fitted statistics: a new fingerprint
    searcher, _ = Searcher.from_table(e, ImageTable(ids=np.arange(40), arrays=images), progress=False)
    searcher.save(tmp_path / "index")
    again = Searcher.load(tmp_path / "index")  # refuses a model whose fingerprint differs
    assert again.embedder.config == GRID_PCA and again.fingerprint == e.fingerprint
    np.testing.assert_allclose(again.embedder.embed_batch(images[:4]), e.embed_batch(images[:4]), atol=1e-6)
    assert [h.id for h in again.query(images[3], k=1)] == [3]
