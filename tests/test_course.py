"""The course's shared helpers: the weights banner, paths as a learner reads them, the dataset's name."""

from __future__ import annotations

from pathlib import Path

from simlib.course import course_path, relative_path, weights_banner


def test_the_banner_names_the_weights_and_what_they_mean():
    random = weights_banner("none", 64)
    assert "Weights in use: none" in random and "grid head" in random and "numbers differ" in random
    imagenet = weights_banner("imagenet", 64)
    assert "Weights in use: ImageNet" in imagenet and 'never "untrained"' in imagenet
    assert "IMAGE_SIZE = 128" in imagenet  # 128 px advised up front for ImageNet weights
    assert "IMAGE_SIZE = 128" not in weights_banner("imagenet", 128)
    assert "local weights file (w.h5)" in weights_banner("/some/where/w.h5", 224)


def test_paths_are_printed_relative_never_as_machine_paths(tmp_path, monkeypatch):
    notebooks = tmp_path / "repo" / "notebooks"
    (notebooks.parent / "artifacts" / "course").mkdir(parents=True)
    notebooks.mkdir()
    monkeypatch.chdir(notebooks)
    assert relative_path(notebooks / "x.json") == "x.json"
    assert relative_path(notebooks.parent / "artifacts" / "course" / "index") == "../artifacts/course/index"
    elsewhere = Path("/var/tmp/run/course")
    assert relative_path(elsewhere / "index", artifacts=elsewhere) == "ARTIFACTS/index"
    assert relative_path("/opt/x/y.json") == "y.json"


def test_a_relative_artifacts_folder_means_the_same_folder_wherever_the_kernel_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = course_path("../artifacts/course")
    assert here.is_absolute() and here.parts[-2:] == ("artifacts", "course")
    assert here == (Path(__file__).resolve().parents[1] / "artifacts" / "course")
    assert course_path(tmp_path / "abs") == tmp_path / "abs"
