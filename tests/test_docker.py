"""The container deployment (Dockerfile, compose.yaml; docs/deploy.md) built and run for real: `make test-docker`.

Opt-in (``SIMLIB_TEST_DOCKER=1``): it needs root, Debian's archive and PyPI, and starts a private Docker daemon
(:mod:`tests.support.docker`). The first run builds the base image (~1 min) and the app image (~1 min here); later
runs reuse both from the daemon's data root under /tmp and take about 5 minutes (``SIMLIB_DOCKER_NO_CACHE=1``
builds the app image from scratch). The figures it measures (build time, image size, cold and warm start, memory)
are printed at the end and written to ``test-artifacts/docker_figures.json``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.support import ARTIFACTS, REPO

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        os.environ.get("SIMLIB_TEST_DOCKER") != "1", reason="container check: run `make test-docker` (needs root)"
    ),
]

IMAGE = "simlib:test"
STANDIN = "local/simlib-milvus-standin:test"
APP_ARGS = ["--weights", "none", "--image-size", "32"]  # offline and quick: an untrained backbone at 32 px
PROJECT = "simlibtest"  # the compose project
AUTH = ("ana", "s3cret-for-the-test")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def figures(request):
    """What the run measured: printed at the end and saved for docs/deploy.md (with the machine's load)."""
    found: dict[str, float] = {"load average (1 min) at the start": os.getloadavg()[0]}
    yield found
    found["load average (1 min) at the end"] = os.getloadavg()[0]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "docker_figures.json").write_text(json.dumps(found, indent=2) + "\n")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
        print("\n---- docker figures (test-artifacts/docker_figures.json)")
        for key, value in found.items():
            print(f"{key:<46} {value:,.1f}")


@pytest.fixture(scope="module")
def docker():
    from tests.support.docker import daemon

    if os.geteuid() != 0:
        pytest.skip("the private Docker daemon needs root")
    with daemon() as d:
        yield d


@pytest.fixture(scope="module")
def image(docker, figures):
    """The app image built from the repository's Dockerfile on the registry-free base (both cached by the daemon)."""
    from tests.support.docker import BASE_IMAGE

    base_seconds = docker.ensure_base()
    if base_seconds:
        figures["base image, debootstrap + import (s)"] = base_seconds
    no_cache = os.environ.get("SIMLIB_DOCKER_NO_CACHE") == "1"  # time a build from scratch (PyPI downloads)
    figures["app image build" + (", no cache" if no_cache else "") + " (s)"] = docker.build(
        IMAGE, build_args={"BASE": BASE_IMAGE}, log=ARTIFACTS / "docker_build.log", no_cache=no_cache
    )
    figures["app image size (MiB)"] = docker.image_size(IMAGE) / 2**20
    return IMAGE


@pytest.fixture(scope="module")
def gallery(data_root, tmp_path_factory) -> Path:
    """60 product images with their styles.csv rows, copied from the read-only data folder."""
    from tests.support.docker import product_gallery

    root = tmp_path_factory.mktemp("docker") / "gallery"  # mktemp's own folder is 0700: the container's user
    product_gallery(data_root / "fashion-product-images-small", root, n=60)  # could not enter it
    return root


def _search(url: str, image: Path, k: int = 5, auth=None) -> dict:
    from gradio_client import Client, handle_file

    client = Client(url, auth=auth, verbose=False, download_files=False)
    _, results, _ = client.predict(handle_file(str(image)), k, collapse=False, api_name="/search")
    return results


def _check_search(url: str, gallery: Path, auth=None) -> None:
    query = sorted((gallery / "images").iterdir())[7]
    hits = _search(url, query, auth=auth)["hits"]
    assert len(hits) == 5
    assert hits[0]["gallery_path"] == query.name  # a gallery image finds itself first (relative to /data/images)
    assert hits[0]["score"] > 0.999
    assert all(not h["gallery_path"].startswith("/") for h in hits)


def _count(pattern: str, text: str) -> int:
    return len(re.findall(pattern, text))


def _ready_seconds(logs: str) -> list[float]:
    return [float(s) for s in re.findall(r"ready in ([\d.]+) s", logs)]


# ----------------------------------------------------------------------------- the image alone
def test_a_code_or_tool_setting_change_reuses_the_dependency_layer(docker, image, gallery, figures, tmp_path):
    """Build a copy of the context with simlib's code and pyproject's tool settings changed: the pip install of
    the dependencies comes from the cache, simlib's wheel is built anew. The gallery is built in (GALLERY)."""
    import shutil

    from tests.support.docker import BASE_IMAGE

    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "app_gradio.py"):
        shutil.copy(REPO / name, tmp_path / name)
    for folder in ("simlib", "docker"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "pyproject.toml", "a") as f:
        f.write("\n[tool.simlib-test-docker]\nchanged = true\n")
    with open(tmp_path / "simlib" / "__init__.py", "a") as f:  # new each run: an earlier run's change is cached
        f.write(f"\n# changed by tests/test_docker.py at {time.time_ns()}\n")
    shutil.copytree(gallery, tmp_path / "my-gallery")
    log = tmp_path / "build.log"
    figures["rebuild after a code change (s)"] = docker.build(
        "simlib:test-cache", tmp_path, build_args={"BASE": BASE_IMAGE, "GALLERY": "my-gallery"}, log=log
    )
    try:
        listing = docker.run("run", "--rm", "--entrypoint", "ls", "simlib:test-cache", "/data", "/data/images").stdout
    finally:
        docker.run("rmi", "simlib:test-cache", check=False)
    assert "styles.csv" in listing and listing.count(".jpg") == 60
    text = log.read_text()

    def cached(stage: str) -> bool:
        step = re.search(rf"^#(\d+) \[{re.escape(stage)}\] RUN", text, flags=re.M)
        assert step, f"no step {stage} in the build log"
        return re.search(rf"^#{step.group(1)} CACHED$", text, flags=re.M) is not None

    assert cached("runtime 2/2")  # pip install -r requirements.txt
    assert not cached("wheel 3/3")  # pip wheel of the changed simlib


def test_image_runs_as_a_non_root_user_with_the_artifacts_volume(docker, image):
    config = docker.run("image", "inspect", image, "--format", "{{json .Config}}").stdout
    config = json.loads(config)
    assert config["User"] == "simlib"
    assert "/artifacts" in config["Volumes"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert not any(e.startswith("SIMLIB_AUTH") for e in config["Env"])  # no login baked in
    # the CA bundle passed as a build secret is nowhere in the image
    out = docker.run("run", "--rm", "--entrypoint", "sh", image, "-c", "ls /run/secrets 2>&1; ls -A /data; pip list")
    assert "hostca" not in out.stdout
    assert "README.md" in out.stdout  # /data without a gallery: the note that says to mount one
    for extra in ("pytest", "jupyterlab", "papermill", "ruff", "playwright"):  # no dev or notebook extras
        assert not re.search(rf"^{extra}\s", out.stdout, flags=re.M | re.I), extra


def test_container_indexes_once_serves_the_gallery_and_reloads_it_from_the_volume(docker, image, gallery, figures):
    from tests.support.docker import free_port, http_status

    name, volume = "simlib-test-app", "simlib-test-artifacts"
    docker.run("rm", "-f", name, check=False)
    docker.run("volume", "rm", "-f", volume, check=False)
    port = free_port()
    try:
        t0 = time.monotonic()
        docker.run(
            "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:7860",
            "-v", f"{gallery}:/data:ro", "-v", f"{volume}:/artifacts",
            "--health-interval", "1s",  # the image's own 10 s would only slow the test down
            image, *APP_ARGS,
        )  # fmt: skip
        docker.wait_healthy(name, timeout=300)
        figures["cold start to healthy (s)"] = time.monotonic() - t0
        logs = docker.logs(name)
        assert "indexing 60 images" in logs and "indexed 60 images" in logs and "cached in /artifacts/index" in logs
        figures["cold start, app's 'ready in' (s)"] = _ready_seconds(logs)[-1]

        url = f"http://127.0.0.1:{port}/"
        _check_search(url, gallery)
        figures["app container memory after searches (MiB)"] = docker.memory_mib(name)

        # the user is not root, the gallery is read-only
        assert docker.run("exec", name, "id", "-u").stdout.strip() == "10001"
        assert docker.run("exec", name, "touch", "/data/x", check=False).returncode != 0

        # only the gallery's image folder is served
        first = sorted((gallery / "images").iterdir())[0].name
        assert http_status(url + f"gradio_api/file=/data/images/{first}") == 200
        for path in ("/etc/passwd", "/data/styles.csv", "/artifacts/index/manifest.json", "/app/app_gradio.py"):
            assert http_status(url + f"gradio_api/file={path}") in (403, 404), path

        # a stop is clean (SIGINT: the app exits 0), not a kill after the timeout (137)
        t0 = time.monotonic()
        docker.run("stop", "-t", "60", name)
        figures["stop (s)"] = time.monotonic() - t0
        assert docker.inspect(name)["State"]["ExitCode"] == 0
        # the next start loads the cached index from the volume
        t0 = time.monotonic()
        docker.run("start", name)
        docker.wait_healthy(name, timeout=300)
        figures["warm start to healthy (s)"] = time.monotonic() - t0
        logs = docker.logs(name)
        assert _count(r"indexing 60 images", logs) == 1
        assert _count(r"loaded /artifacts/index \(60 images\)", logs) == 1
        figures["warm start, app's 'ready in' (s)"] = _ready_seconds(logs)[-1]
        _check_search(url, gallery)
    finally:
        docker.run("rm", "-f", name, check=False)

    # a new container on the same volume, with the login from a secret file, loads the same index
    secret = gallery.parent / "simlib_auth"
    secret.write_text(":".join(AUTH) + "\n")
    os.chown(secret, 10001, 10001)
    secret.chmod(0o400)
    name = "simlib-test-app-auth"
    port = free_port()
    try:
        docker.run(
            "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:7860",
            "-v", f"{gallery}:/data:ro", "-v", f"{volume}:/artifacts",
            "-v", f"{secret}:/run/secrets/simlib_auth:ro", "--health-interval", "1s",
            image, *APP_ARGS,
        )  # fmt: skip
        docker.wait_healthy(name, timeout=300)
        logs = docker.logs(name)
        assert "loaded /artifacts/index (60 images)" in logs and "indexing" not in logs
        assert "(password required)" in logs
        url = f"http://127.0.0.1:{port}/"
        assert http_status(url + "gradio_api/info") == 401
        assert not any(e.startswith("SIMLIB_AUTH") for e in docker.inspect(name)["Config"]["Env"])
        _check_search(url, gallery, auth=AUTH)
    finally:
        docker.run("rm", "-f", name, check=False)
        docker.run("volume", "rm", "-f", volume, check=False)


# ----------------------------------------------------------------------------- compose
def test_compose_default_serves_the_app_alone_behind_a_secret_login(docker, image, gallery, figures, tmp_path):
    """Without a profile `up` starts the app service only (none of Milvus' images would be pulled); a Compose
    secret named simlib_auth (added by an override file, as docs/deploy.md shows) makes it ask for a login."""
    from tests.support.docker import free_port, http_status

    secret = tmp_path / "simlib_auth"
    secret.write_text(":".join(AUTH) + "\n")
    os.chown(secret, 10001, 10001)
    secret.chmod(0o400)
    override = tmp_path / "compose.override.yaml"
    override.write_text(
        "services:\n  app:\n    secrets: [simlib_auth]\n"
        f"    command: {json.dumps(APP_ARGS)}\n"
        f"secrets:\n  simlib_auth:\n    file: {secret}\n"
    )
    port = free_port()
    env = {"SIMLIB_IMAGE": image, "SIMLIB_GALLERY": str(gallery), "SIMLIB_PORT": str(port)}
    files = ["-p", f"{PROJECT}default", "-f", "compose.yaml", "-f", str(override)]
    docker.compose(*files, "down", "-v", env=env, check=False)
    try:
        t0 = time.monotonic()
        docker.compose(*files, "up", "-d", env=env)
        created = docker.run(
            "ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}default",
            "--format", '{{.Label "com.docker.compose.service"}}',
        ).stdout.split()  # fmt: skip
        assert created == ["app"]
        app = docker.compose(*files, "ps", "-q", "app", env=env).strip()
        docker.wait_healthy(app, timeout=300)
        figures["compose app alone: up to healthy (s)"] = time.monotonic() - t0
        assert "login required (from /run/secrets/simlib_auth)" in docker.logs(app)
        url = f"http://127.0.0.1:{port}/"
        assert http_status(url + "gradio_api/info") == 401
        _check_search(url, gallery, auth=AUTH)
    finally:
        docker.compose(*files, "down", "-v", env=env, check=False)


def test_compose_milvus_profile_serves_searches_from_milvus(docker, image, gallery, figures):
    """`docker-compose --profile milvus up` with a stand-in Milvus (PyPI's embedded standalone): the app's first
    start indexes the gallery into Milvus, it searches there, and a restart reloads the saved index folder."""
    from tests.support.docker import BASE_IMAGE, free_port

    docker.build(
        STANDIN,
        REPO / "tests" / "support",
        dockerfile=REPO / "tests" / "support" / "milvus-standin.Dockerfile",
        build_args={"BASE": BASE_IMAGE},
    )
    port = free_port()
    env = {
        "SIMLIB_IMAGE": image,
        "SIMLIB_STANDIN_IMAGE": STANDIN,
        "SIMLIB_GALLERY": str(gallery),
        "SIMLIB_PORT": str(free_port()),
        "SIMLIB_MILVUS_PORT": str(port),
    }
    override = "tests/support/compose.milvus-standin.yaml"
    files = ["-p", PROJECT, "-f", "compose.yaml", "-f", override, "--profile", "milvus"]

    def compose(*args: str, check: bool = True) -> str:
        return docker.compose(*files, *args, env=env, check=check)

    compose("down", "-v", "--remove-orphans", check=False)
    try:
        t0 = time.monotonic()
        compose("up", "-d", "app-milvus")
        app = compose("ps", "-q", "app-milvus").strip()
        milvus = compose("ps", "-q", "milvus").strip()
        assert app and milvus
        docker.wait_healthy(app, timeout=400)
        figures["compose milvus: up to app healthy (s)"] = time.monotonic() - t0
        logs = docker.logs(app)
        assert "indexing the gallery into Milvus at http://milvus:19530" in logs
        assert "indexed 60 images" in logs
        assert "loaded /artifacts/index-milvus (milvus, 60 images)" in logs

        manifest = json.loads(docker.run("exec", app, "cat", "/artifacts/index-milvus/manifest.json").stdout)
        assert manifest["backend"] == "milvus" and manifest["uri"] == "http://milvus:19530"
        # the vectors are in Milvus, not in a FAISS file
        assert docker.run("exec", app, "ls", "/artifacts/index-milvus/index.faiss", check=False).returncode != 0
        count = docker.run(
            "exec", app, "python", "-c",
            "from pymilvus import MilvusClient; c = MilvusClient('http://milvus:19530'); "
            f"print(c.get_collection_stats('{manifest['collection']}')['row_count'])",
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        assert int(count) == 60

        url = f"http://127.0.0.1:{port}/"
        _check_search(url, gallery)
        figures["compose milvus: app memory (MiB)"] = docker.memory_mib(app)
        figures["compose milvus: stand-in Milvus memory (MiB)"] = docker.memory_mib(milvus)

        t0 = time.monotonic()
        compose("restart", "app-milvus")
        docker.wait_healthy(app, timeout=300)
        figures["compose milvus: app restart to healthy (s)"] = time.monotonic() - t0
        logs = docker.logs(app)
        assert _count(r"indexing the gallery into Milvus", logs) == 1
        assert _count(r"loaded /artifacts/index-milvus \(milvus, 60 images\)", logs) == 2
        _check_search(url, gallery)
    finally:
        compose("down", "-v", "--remove-orphans", check=False)
