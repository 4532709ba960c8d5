"""The Hugging Face Space layout (deploy/space/) stays in step with pyproject.toml, and the assembled Space runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.support import REPO

SPACE = REPO / "deploy" / "space"


def _front_matter() -> dict[str, str]:
    text = (SPACE / "README.md").read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.S)
    assert match, "deploy/space/README.md must open with the Space's YAML front matter"
    pairs = (line.split(":", 1) for line in match.group(1).splitlines() if line.strip())
    return {key.strip(): value.strip().strip('"') for key, value in pairs}


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _assemble(out: Path, gallery: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SPACE / "assemble.sh"), str(out), str(gallery)], capture_output=True, text=True, check=False
    )


def test_space_settings_match_the_project():
    meta = _front_matter()
    assert meta["sdk"] == "gradio"
    gradio = next(Requirement(d) for d in _project()["dependencies"] if Requirement(d).name == "gradio")
    assert meta["sdk_version"] in gradio.specifier, f"sdk_version {meta['sdk_version']} is outside {gradio}"
    assert meta["python_version"] in SpecifierSet(_project()["requires-python"])
    assert meta["python_version"] == "3.11"  # what the project, its image and CI run
    assert (SPACE / meta["app_file"]).is_file()
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", meta["title"]), "gradio deploy names the Space after title"


def test_space_requirements_are_the_runtime_dependencies_with_gradio_at_the_sdk_version():
    """Every runtime dependency with the same versions and markers; Gradio pinned to the Space's sdk_version
    (which the Space installs before the requirements), with pyproject's extras."""
    deps = [Requirement(d) for d in _project()["dependencies"]]
    have = _requirements(SPACE / "requirements.txt")
    assert len({r.name for r in have}) == len(have)
    assert {str(r) for r in have if r.name != "gradio"} == {str(r) for r in deps if r.name != "gradio"}
    gradio = next(r for r in deps if r.name == "gradio")
    pinned = next(r for r in have if r.name == "gradio")
    assert pinned.extras == gradio.extras
    assert str(pinned.specifier) == f"=={_front_matter()['sdk_version']}"


def test_space_app_serves_the_copied_gallery_on_all_interfaces():
    sys.path.insert(0, str(SPACE))
    try:
        import app as space_app

        from app_gradio import build_parser
    finally:
        sys.path.remove(str(SPACE))
        sys.modules.pop("app", None)
    args = build_parser().parse_args(space_app.space_argv(""))
    assert (args.host, args.port, args.data, args.artifacts) == ("0.0.0.0", 7860, "gallery", "artifacts")
    args = build_parser().parse_args(space_app.space_argv("--image-size 128 -k 8"))
    assert (args.image_size, args.k) == (128, 8)


def test_assemble_lays_out_the_space(tmp_path):
    from tests.support.galleries import labelled_folder, synthetic_items

    gallery = labelled_folder(tmp_path / "gallery", synthetic_items(2, 3))
    out = tmp_path / "space"
    result = _assemble(out, gallery)
    assert result.returncode == 0, result.stderr
    assert "gradio deploy" in result.stdout
    for name in ("README.md", "requirements.txt", "app.py", "app_gradio.py", "simlib/__init__.py"):
        assert (out / name).is_file(), name
    assert (out / _front_matter()["app_file"]).is_file()
    assert len(list((out / "gallery").rglob("*.png"))) == 6
    assert not list(out.rglob("__pycache__"))
    # refuses to overwrite, and a missing gallery
    assert _assemble(out, gallery).returncode == 1
    assert _assemble(tmp_path / "other", tmp_path / "nowhere").returncode == 1


@pytest.mark.integration
def test_assembled_space_serves_searches(product_dir, tmp_path):
    """The assembled folder runs as a Space would start it (`python app.py` in it), here kept on 127.0.0.1."""
    from tests.support.docker import product_gallery
    from tests.support.servers import free_port

    product_gallery(product_dir, tmp_path / "gallery", n=24)
    out = tmp_path / "space"
    assert _assemble(out, tmp_path / "gallery").returncode == 0
    port = free_port()
    env = {
        **os.environ,
        "SIMLIB_SPACE_ARGS": f"--host 127.0.0.1 --port {port} --weights none --image-size 32",
        "PYTHONPATH": "",  # the Space's own copy of simlib, not this checkout's
    }
    env.pop("SIMLIB_AUTH", None)
    log = out / "app.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=out, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while "ready in" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        text = log.read_text()
        assert re.search(r"indexed 24 images .* cached in artifacts/index$", text, flags=re.M), text
        from gradio_client import Client, handle_file

        query = sorted((out / "gallery" / "images").iterdir())[3]
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        _, results, _ = client.predict(handle_file(str(query)), 3, collapse=False, api_name="/search")
        assert Path(results["hits"][0]["gallery_path"]).name == query.name
        assert all(not Path(h["gallery_path"]).is_absolute() for h in results["hits"])  # no server path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
