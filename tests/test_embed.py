import numpy as np
import pytest
from PIL import Image

from simlib.data import ImageTable, prepare_image
from simlib.model.embed import embed_table

pytestmark = pytest.mark.integration  # every test embeds with a ResNet50 (tiny_model)


def test_table_embedding_matches_one_by_one_embedding(tiny_model, small_table):
    sub = small_table.subset(np.arange(10))
    result = embed_table(tiny_model, sub, batch_size=4, progress=False)
    assert result.embeddings.shape == (10, 32) and result.embeddings.dtype == np.float32
    assert result.rows.tolist() == list(range(10)) and result.skipped == {}
    single = tiny_model.embed_images([sub.paths[7]])[0]
    np.testing.assert_allclose(result.embeddings[7], single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, rtol=1e-5)


def test_unreadable_rows_are_skipped_with_reasons(tiny_model, small_table, tmp_path):
    (tmp_path / "bad.png").write_text("<html>not a png</html>")
    table = ImageTable(ids=np.arange(3), paths=(small_table.paths[0], str(tmp_path / "bad.png"), small_table.paths[1]))
    result = embed_table(tiny_model, table, progress=False)
    assert result.rows.tolist() == [0, 2]
    assert list(result.skipped) == [1] and "bad.png" in result.skipped[1]


def test_compiled_forward_traces_once_for_any_batch_size(tiny_model, small_table):
    fn = tiny_model.forward
    batch = np.stack([prepare_image(p, 32) for p in small_table.paths[:5]])
    tiny_model.embed_batch(batch[:1])
    before = fn.experimental_get_tracing_count()
    for n in (1, 2, 5, 3):
        tiny_model.embed_batch(batch[:n])
    assert fn.experimental_get_tracing_count() == before == 1


def test_inputs_of_any_kind_give_the_same_vector(tiny_model, small_table):
    path = small_table.paths[3]
    arr = np.asarray(Image.open(path).convert("RGB"))
    v = tiny_model.embed_images([path, Image.open(path), arr])
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)
    np.testing.assert_allclose(v[0], v[2], atol=1e-6)
    assert tiny_model.embed_images([]).shape == (0, 32)
