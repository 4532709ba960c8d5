"""simlib.app.server and app_gradio.py: the options, auth, share failures and the launch settings."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pytest

from simlib.app import GalleryService
from simlib.app.server import MAX_UPLOAD, launch_settings, open_service, parse_auth, share_failure, train_allowed
from simlib.errors import SimlibError
from tests.support import REPO


def app_gradio():
    """The top-level script, imported as a module (it sits beside the package, not in it)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("app_gradio")


def test_auth_share_failure_and_the_training_switch():
    assert parse_auth("ana:pa:ss") == ("ana", "pa:ss") and parse_auth(None) is None
    for bad in ("ana", ":pw", "ana:"):
        with pytest.raises(SimlibError, match="USER:PASSWORD"):
            parse_auth(bad)
    gradio_said = "\nCould not create share link. Missing file: /x/frpc. \n\nPlease check your internet connection."
    assert share_failure(gradio_said).endswith("[Missing file: /x/frpc]")
    assert train_allowed("127.0.0.1", share=False, allow_train=False)
    assert not train_allowed("127.0.0.1", share=True, allow_train=False)
    assert not train_allowed("0.0.0.0", share=False, allow_train=False)
    assert train_allowed("0.0.0.0", share=True, allow_train=True)


def test_app_gradio_is_only_options_and_main():
    source = (REPO / "app_gradio.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("from simlib", "import simlib"))]
    assert imports and all(line.startswith(("from simlib.app", "from simlib.cli import")) for line in imports)
    args = app_gradio().build_parser().parse_args(["--port", "0", "-k", "3"])
    assert (args.k, args.weights, args.artifacts) == (3, None, "artifacts")


@pytest.mark.integration
def test_mmap_needs_an_index_and_no_adding(small_index_dir, capsys):
    for argv in (["--mmap"], ["--index", str(small_index_dir), "--mmap", "--allow-add"]):
        assert app_gradio().main(argv) == 1
        assert "--mmap needs --index DIR and cannot be combined with --allow-add" in capsys.readouterr().err


@pytest.mark.integration
def test_launch_settings_serve_only_the_gallery(searcher, small_index_dir, tmp_path):
    settings = launch_settings(GalleryService(searcher, artifacts=small_index_dir))
    folders = {str(Path(r.path).parent) for r in searcher.index.records()}
    assert set(settings["allowed_paths"]) == folders
    # An index folder given as the artifacts: it and the feedback beside it are blocked, not the folder around.
    index_dir = Path(small_index_dir).resolve()
    assert settings["blocked_paths"] == sorted([str(index_dir), str(index_dir.parent / "feedback")])
    assert settings["max_file_size"] == MAX_UPLOAD and settings["show_error"]
    # An artifacts folder with --allow-add: its gallery_uploads/ is served, everything else in it blocked.
    artifacts = tmp_path / "artifacts"
    shutil.copytree(small_index_dir, artifacts / "index")
    (artifacts / "model").mkdir()
    (artifacts / "notes.txt").write_text("private")
    root = artifacts.resolve()
    settings = launch_settings(GalleryService(searcher, artifacts=artifacts, allow_add=True))
    assert set(settings["allowed_paths"]) == folders | {str(root / "gallery_uploads")}
    blocked = {root / "index", root / "feedback", root / "model", root / "notes.txt"}
    assert set(settings["blocked_paths"]) == {str(p) for p in blocked}
    assert launch_settings(GalleryService(searcher, artifacts=artifacts))["allowed_paths"] == sorted(folders)


@pytest.mark.integration
def test_the_app_opens_a_changed_photo_folder_by_syncing_it(small_table, tmp_path):
    """Photos added to and removed from a served folder between two starts: the second start embeds only the
    new ones and removes the gone ones (no rebuild), and the served gallery shows the change."""
    folder = tmp_path / "photos"
    for n in range(8):
        dest = folder / f"c{n % 2}" / f"{n}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(small_table.paths[n], dest)
    argv = ["--data", str(folder), "--artifacts", str(tmp_path / "art"), "--weights", "none", "--image-size", "32"]
    lines: list[str] = []
    service = open_service(app_gradio().build_parser().parse_args(argv), lines.append)
    assert len(service.searcher.index) == 8 and any(line.startswith("indexed 8 images") for line in lines)
    for n in (8, 9):
        shutil.copy(small_table.paths[n], folder / "c0" / f"{n}.jpg")
    (folder / "c1" / "1.jpg").unlink()
    lines.clear()
    service = open_service(app_gradio().build_parser().parse_args(argv), lines.append)
    synced = [line for line in lines if ": synced: " in line]
    assert synced and "2 added" in synced[0] and "1 removed" in synced[0], lines
    assert not any(line.startswith("indexed") for line in lines), lines  # loaded, not rebuilt
    paths = {Path(r.path).name for r in service.searcher.index.records()}
    assert len(paths) == 9 and {"8.jpg", "9.jpg"} <= paths and "1.jpg" not in paths
