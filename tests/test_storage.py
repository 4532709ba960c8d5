import pytest

from simlib.errors import SimlibError
from simlib.storage import atomic_dir, load_json, recover_dir, save_json


def test_save_and_load_json(tmp_path):
    save_json(tmp_path / "a.json", {"b": [1, 2], "a": "x"})
    assert load_json(tmp_path / "a.json") == {"a": "x", "b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


def test_load_json_errors_are_clear(tmp_path):
    with pytest.raises(SimlibError, match="missing"):
        load_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SimlibError, match="not valid JSON"):
        load_json(tmp_path / "bad.json")


def test_atomic_dir_replaces_the_folder_only_on_success(tmp_path):
    target = tmp_path / "index"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("1")
    assert (target / "v").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("crash while writing")
    assert (target / "v").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "v").write_text("3")
    assert (target / "v").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_recover_dir_restores_a_folder_set_aside_by_an_interrupted_save(tmp_path):
    old = tmp_path / ".index.old"
    old.mkdir()
    (old / "v").write_text("1")
    recover_dir(tmp_path / "index")
    assert (tmp_path / "index" / "v").read_text() == "1"
