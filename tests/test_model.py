import subprocess
import sys
import time

import numpy as np
import pytest

from simlib.errors import SimlibError
from simlib.model import (
    build_embedding_model,
    load_model,
    model_config,
    model_fingerprint,
    resolve_weights,
    save_model,
)
from tests.support import REPO
from tests.support.galleries import model_config as tiny_config


@pytest.mark.integration  # builds a ResNet50
def test_model_outputs_unit_vectors_of_the_configured_size(tiny_model):
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    y = np.asarray(tiny_model(x, training=False))
    assert y.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
    # the backbone is Keras' ResNet50, whole: get_layer raises instead of returning None, so look it up by name
    backbones = [layer for layer in tiny_model.layers if layer.name == "resnet50"]
    assert len(backbones) == 1 and backbones[0].get_layer("conv5_block3_out").output.shape[1:3] == (1, 1)
    assert model_config(tiny_model).image_size == 32


@pytest.mark.integration  # builds a ResNet50
def test_same_seed_same_weights_other_seed_other_weights(tiny_model):
    again = build_embedding_model(tiny_config(seed=0))
    other = build_embedding_model(tiny_config(seed=1))
    assert model_fingerprint(again) == model_fingerprint(tiny_model)
    assert model_fingerprint(other) != model_fingerprint(tiny_model)


@pytest.mark.integration  # builds a ResNet50
def test_save_and_load_give_identical_embeddings(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(tiny_model(x)))
    assert model_config(loaded) == model_config(tiny_model)
    assert model_fingerprint(loaded) == model_fingerprint(tiny_model)


def test_load_model_errors(tmp_path):
    with pytest.raises(SimlibError, match="not a simlib model folder"):
        load_model(tmp_path)
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    (tmp_path / "config.json").write_text('{"config": {}}')
    with pytest.raises(SimlibError, match="cannot load the model"):
        load_model(tmp_path)


def test_weights_path_policy(tmp_path):
    assert resolve_weights("none") == "none"
    with pytest.raises(SimlibError, match="not found"):
        resolve_weights(str(tmp_path / "w.h5"))
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(SimlibError, match=r"\.h5"):
        resolve_weights(str(tmp_path / "w.txt"))


@pytest.mark.integration  # builds a ResNet50
def test_local_weights_file_is_loaded(tmp_path, tiny_model):
    # A backbone weights file written by Keras, as a user would bring from another machine.
    path = tmp_path / "resnet50_notop.weights.h5"
    tiny_model.get_layer("resnet50").save_weights(path)
    model = build_embedding_model(tiny_config(weights=resolve_weights(str(path))))
    a = tiny_model.get_layer("resnet50").get_weights()[0]
    b = model.get_layer("resnet50").get_weights()[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.integration  # builds a ResNet50
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


@pytest.mark.integration  # builds a ResNet50
def test_mixed_bfloat16_keeps_float32_unit_outputs_close_to_float32(tiny_model, tmp_path):
    import keras

    from simlib.embed import embed_batch
    from simlib.model import with_precision

    before = keras.config.dtype_policy().name
    bf16 = build_embedding_model(tiny_config(precision="mixed_bfloat16"))
    assert keras.config.dtype_policy().name == before  # the global policy is restored
    assert bf16.get_layer("resnet50").compute_dtype == "bfloat16"
    assert model_fingerprint(with_precision(bf16, "float32")) == model_fingerprint(tiny_model)  # same weights
    assert with_precision(tiny_model, "float32") is tiny_model
    x = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    a, b = embed_batch(tiny_model, x), embed_batch(bf16, x)
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, rtol=1e-5)
    assert (a * b).sum(1).min() > 0.99  # bfloat16 rounding, not a different model
    assert not np.array_equal(a, b)
    save_model(bf16, tmp_path / "bf16")
    loaded = load_model(tmp_path / "bf16")
    assert model_config(loaded).precision == "mixed_bfloat16"
    np.testing.assert_array_equal(embed_batch(loaded, x), b)
