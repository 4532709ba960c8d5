"""Docker for ``make test-docker``: a private daemon, a registry-free base image, the app image and its containers.

Test infrastructure, not library code. No image registry is reachable from this machine, but Debian's archive
and PyPI are, so:

- the daemon is Debian's ``docker.io`` (installed with ``apt-get`` when missing), started with its own data root,
  exec root, pid file and socket under :data:`HOME` and stopped by its pid afterwards; the data root stays, so
  the base image and the build cache survive between runs;
- the base image is a ``debootstrap`` Debian 12 (Python 3.11) imported with ``docker import``, built once;
- builds use Debian's ``/usr/bin/docker`` (BuildKit built in, so ``--secret`` works without buildx) and pass the
  machine's CA bundle as the ``hostca`` secret, so pip inside the build trusts this network's TLS and the bundle
  never lands in a layer.

Nothing here imports TensorFlow, Keras, FAISS or Gradio.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support import REPO

HOME = Path(os.environ.get("SIMLIB_DOCKER_HOME", "/tmp/simlib-docker"))
DOCKER = "/usr/bin/docker"  # Debian's 20.10 client: built-in BuildKit (``/usr/local/bin/docker`` may lack buildx)
COMPOSE = "docker-compose"  # v1 1.29.2 from Debian; ``docker compose`` v2 where the plugin exists
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_IMAGE = "local/bookworm-python:simlib"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("docker.io", "debootstrap", "docker-compose")


class DockerError(RuntimeError):
    """A docker command failed; the message carries its output."""


def install_packages() -> None:
    """Debian's docker.io, debootstrap and docker-compose, installed once (needs root and Debian's archive)."""
    missing = [exe for exe in ("/usr/sbin/dockerd", DOCKER, "/usr/sbin/debootstrap") if not Path(exe).exists()] + (
        [] if shutil.which(COMPOSE) else [COMPOSE]
    )
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True, env=env, capture_output=True)


class Docker:
    """A docker daemon reached through its own socket, and the commands the tests run against it."""

    def __init__(self, home: Path = HOME):
        self.home = home
        self.socket = home / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "1"}
        # compose v1 runs `docker` for CLI builds: Debian's client first on PATH
        self.env["PATH"] = f"{Path(DOCKER).parent}:{self.env.get('PATH', '')}"
        self.proc: subprocess.Popen | None = None

    # -------------------------------------------------------------------------- the daemon
    def answers(self) -> bool:
        return self.socket.exists() and self.run("info", check=False, timeout=20).returncode == 0

    def start(self, timeout: float = 60) -> None:
        """Start a private dockerd unless one already answers on this socket (then it is reused, not stopped)."""
        if self.answers():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / "dockerd.log", "ab")  # noqa: SIM115 (kept open while the daemon runs)
        self.proc = subprocess.Popen(
            [
                "/usr/sbin/dockerd",
                "--data-root",
                str(self.home / "data"),
                "--exec-root",
                str(self.home / "exec"),
                "--pidfile",
                str(self.home / "dockerd.pid"),
                "-H",
                f"unix://{self.socket}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None:
                raise DockerError(f"dockerd exited with {self.proc.returncode}; see {self.home / 'dockerd.log'}")
            if time.monotonic() > deadline:
                raise DockerError(f"dockerd did not answer within {timeout:.0f} s; see {self.home / 'dockerd.log'}")
            time.sleep(0.3)

    def stop(self) -> None:
        """Stop the daemon this object started (by its pid; containers it runs stop with it)."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)
                break
        self.proc = None

    # -------------------------------------------------------------------------- commands
    def run(
        self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """``docker ARGS`` against this daemon; with ``check`` a failure raises :class:`DockerError`."""
        out = subprocess.run(
            [DOCKER, *args], env=self.env, capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and out.returncode != 0:
            raise DockerError(f"docker {' '.join(args[:3])} ... exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    def compose(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO, check: bool = True, timeout: float = 600
    ) -> str:
        """``docker-compose ARGS`` (v1) against this daemon, run in ``cwd`` with ``env`` added to the environment;
        returns its stdout."""
        out = subprocess.run(
            [COMPOSE, *args], env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
        if check and out.returncode != 0:
            raise DockerError(f"docker-compose {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def has_image(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False).returncode == 0

    def inspect(self, name: str) -> dict:
        return json.loads(self.run("inspect", name).stdout)[0]

    def image_size(self, tag: str) -> int:
        """The image's size in bytes (``docker image inspect``'s Size: all its layers)."""
        return int(json.loads(self.run("image", "inspect", tag).stdout)[0]["Size"])

    def logs(self, name: str) -> str:
        out = self.run("logs", name, check=False)
        return out.stdout + out.stderr

    # -------------------------------------------------------------------------- images
    def ensure_base(self, tag: str = BASE_IMAGE) -> float:
        """The registry-free base image (Debian 12 minbase with Python 3.11), built once; returns seconds spent."""
        if self.has_image(tag):
            return 0.0
        t0 = time.monotonic()
        rootfs = self.home / "rootfs"
        if not (rootfs / "usr" / "bin" / "python3").exists():
            shutil.rmtree(rootfs, ignore_errors=True)
            with open(self.home / "debootstrap.log", "wb") as log:
                subprocess.run(
                    [
                        "/usr/sbin/debootstrap",
                        "--variant=minbase",
                        "--include=python3,python3-venv,python3-pip,ca-certificates",
                        "bookworm",
                        str(rootfs),
                        DEBIAN_MIRROR,
                    ],
                    check=True,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=900,
                )
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for f in (rootfs / cache).glob("*"):
                    if f.is_file():
                        f.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [DOCKER, "import", "-c", "ENV LANG=C.UTF-8", "-c", 'CMD ["/bin/bash"]', "-", tag],
            stdin=tar.stdout,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        tar.wait()
        if imported.returncode != 0:
            raise DockerError(f"docker import failed: {imported.stderr}")
        return time.monotonic() - t0

    def build(
        self,
        tag: str,
        context: Path = REPO,
        *,
        dockerfile: Path | None = None,
        build_args: dict[str, str] | None = None,
        log: Path | None = None,
        no_cache: bool = False,
        timeout: float = 1800,
    ) -> float:
        """``docker build`` with BuildKit and the CA bundle as the ``hostca`` secret; returns the seconds it took."""
        args = ["build", "--progress=plain", "-t", tag, *(["--no-cache"] if no_cache else [])]
        if dockerfile is not None:
            args += ["-f", str(dockerfile)]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        if CA_BUNDLE.is_file():
            args += ["--secret", f"id=hostca,src={CA_BUNDLE}"]
        t0 = time.monotonic()
        out = self.run(*args, str(context), check=False, timeout=timeout)
        took = time.monotonic() - t0
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(out.stdout + out.stderr)
        if out.returncode != 0:
            raise DockerError(f"docker build of {tag} failed:\n{(out.stdout + out.stderr)[-4000:]}")
        return took

    # -------------------------------------------------------------------------- containers
    def health(self, name: str) -> str:
        """The container's health status (``starting``, ``healthy``, ``unhealthy``), or its state when it stopped."""
        state = self.inspect(name)["State"]
        if not state.get("Running"):
            return f"exited ({state.get('ExitCode')})"
        return state.get("Health", {}).get("Status", "none")

    def wait_healthy(self, name: str, timeout: float = 600) -> float:
        """Wait until the image's HEALTHCHECK reports healthy; returns the seconds waited."""
        t0 = time.monotonic()
        while True:
            status = self.health(name)
            if status == "healthy":
                return time.monotonic() - t0
            if status.startswith("exited") or status == "unhealthy":
                raise DockerError(f"container {name} is {status}:\n{self.logs(name)[-4000:]}")
            if time.monotonic() - t0 > timeout:
                raise DockerError(f"container {name} not healthy within {timeout:.0f} s:\n{self.logs(name)[-4000:]}")
            time.sleep(0.5)

    def published_port(self, name: str, port: int = 7860) -> int:
        """The host port (on 127.0.0.1) that ``port`` of the container is published on."""
        out = self.run("port", name, f"{port}/tcp").stdout.split()
        return int(out[0].rsplit(":", 1)[1])

    def memory_mib(self, name: str) -> float:
        """The container's memory use now, in MiB (``docker stats --no-stream``)."""
        text = self.run("stats", "--no-stream", "--format", "{{.MemUsage}}", name).stdout.split("/")[0].strip()
        units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 2**20}
        for unit, factor in units.items():
            if text.endswith(unit):
                return float(text[: -len(unit)]) * factor
        raise DockerError(f"cannot read docker stats: {text!r}")


@contextlib.contextmanager
def daemon(home: Path = HOME) -> Iterator[Docker]:
    """A private docker daemon for the length of the block (reused when one already answers on its socket)."""
    install_packages()
    d = Docker(home)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 5) -> int:
    """The HTTP status of a GET (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def product_gallery(source: Path, out: Path, n: int = 60, skip: int = 0) -> list[str]:
    """A product-layout gallery (``styles.csv`` + ``images/``) of ``n`` images copied from ``source``.

    Rows ``skip .. skip + n`` of the source's ``styles.csv`` whose image exists; returns their ids.
    """
    import csv

    (out / "images").mkdir(parents=True, exist_ok=True)
    with open(source / "styles.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = [r for r in reader if (source / "images" / f"{r['id']}.jpg").is_file()][skip : skip + n]
    with open(out / "styles.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)  # type: ignore[arg-type]
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        shutil.copyfile(source / "images" / f"{r['id']}.jpg", out / "images" / f"{r['id']}.jpg")
    return [r["id"] for r in rows]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5) -> float:
    """Poll ``predicate`` until true; returns the seconds waited, raises after ``timeout``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise DockerError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - t0
