"""A real Milvus server for the backend tests and benchmark: PyPI's embedded standalone on 127.0.0.1.

Test infrastructure, not library code: ``make test-milvus`` (``tests/test_backends.py``) and
``benchmarks/bench_backends.py`` start one with :func:`local_server` and stop it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from simlib.errors import SimlibError


@contextlib.contextmanager
def local_server(data_dir: str | os.PathLike, port: int = 0, start_timeout: float = 180) -> Iterator[str]:
    """Run PyPI's embedded Milvus standalone (``milvus-server``, package ``milvus``) on 127.0.0.1.

    Yields its uri (``http://127.0.0.1:PORT``) once it answers, and stops it afterwards:
    SIGINT (its own clean stop), then SIGTERM and SIGKILL to its process group, each with a
    bounded wait (the server binary outlives a plain SIGTERM to the launcher).

    Args:
        data_dir: where the server keeps its data and logs.
        port: the proxy port; 0 picks a free one.
        start_timeout: seconds to wait for the server to answer.
    """
    import shutil
    import signal
    import socket
    import subprocess
    import sys

    exe = shutil.which("milvus-server") or str(Path(sys.executable).with_name("milvus-server"))
    if not Path(exe).exists():
        raise SimlibError("milvus-server is not installed: pip install milvus (the embedded standalone server)")
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    uri = f"http://127.0.0.1:{port}"
    with open(data_dir / "milvus-server.log", "ab") as log:
        proc = subprocess.Popen(
            [exe, "--data", str(data_dir), "--proxy-port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so the server binary can be stopped with it
        )
    try:
        deadline = time.monotonic() + start_timeout
        while not _answers(uri):
            if proc.poll() is not None:
                raise SimlibError(f"milvus-server exited with {proc.returncode}; see {data_dir / 'milvus-server.log'}")
            if time.monotonic() > deadline:
                raise SimlibError(f"milvus-server did not answer at {uri} within {start_timeout:.0f} s")
            time.sleep(0.5)
        yield uri
    finally:
        _stop_group(proc, signal)


def _answers(uri: str) -> bool:
    import socket

    port = int(uri.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        from pymilvus import MilvusClient

        client = MilvusClient(uri=uri, timeout=5)
        client.list_collections()
        client.close()
        return True
    except Exception:
        return False


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _stop_group(proc, signal) -> None:
    """Stop a process started in its own session and everything in its group, with bounded waits."""
    import subprocess

    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)
            if not _group_alive(proc.pid):
                return
