import json

import pytest

from simlib.config import IndexConfig, ModelConfig, from_dict, to_dict
from simlib.errors import SimlibError


def test_model_config_round_trips_through_json():
    cfg = ModelConfig(image_size=96, embedding_dim=64, weights="imagenet", pooling="max", resize="crop", seed=3)
    again = from_dict(ModelConfig, json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg


def test_from_dict_ignores_unknown_keys_from_newer_versions():
    cfg = from_dict(IndexConfig, {"kind": "hnsw", "hnsw_m": 16, "invented_later": 1})
    assert cfg == IndexConfig(kind="hnsw", hnsw_m=16)


@pytest.mark.parametrize(
    "kwargs",
    [{"image_size": 16}, {"embedding_dim": 1}, {"pooling": "gem"}, {"resize": "stretch"}, {"backbone": "vgg"}],
)
def test_model_config_rejects_bad_values_with_a_clear_error(kwargs):
    with pytest.raises(SimlibError):
        ModelConfig(**kwargs)


def test_index_config_rejects_unknown_kind():
    with pytest.raises(SimlibError, match="index kind"):
        IndexConfig(kind="lsh")


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        ModelConfig().image_size = 128  # type: ignore[misc]


def test_precision_is_float32_by_default_and_checked():
    assert ModelConfig().precision == "float32"
    assert ModelConfig(precision="mixed_bfloat16").precision == "mixed_bfloat16"
    with pytest.raises(SimlibError, match="precision"):
        ModelConfig(precision="float16")


def test_ivf_nprobe_automatic_and_fixed():
    auto = IndexConfig(kind="ivfpq")
    assert [auto.nprobe(n) for n in (10, 100, 1265, 4000)] == [10, 16, 79, 250]
    assert IndexConfig(kind="ivfpq", ivf_nprobe=64).nprobe(4000) == 64
    assert IndexConfig(kind="ivfpq", ivf_nprobe=64).nprobe(40) == 40
    with pytest.raises(SimlibError, match="ivf_nprobe"):
        IndexConfig(ivf_nprobe=-1)
