"""The command line run in-process (``simlib.cli.main``), and as a real process for the one smoke test."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO


@dataclasses.dataclass(frozen=True)
class CliResult:
    """What a command printed and returned (the fields of ``subprocess.CompletedProcess`` that tests read)."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str | os.PathLike | int) -> CliResult:
    """Run ``simlib ARGS`` in this process: ``main`` returns the exit code, argparse's usage errors exit 2.

    Leaves the process as it found it: environment variables, the working folder and the Keras
    dtype policy are restored afterwards, so one command cannot change what the next test sees.
    """
    from simlib.cli import main

    env, cwd, policy = dict(os.environ), os.getcwd(), _keras_policy()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse: --help (0) and usage errors (2)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        _restore_keras_policy(policy)
    return CliResult(code, out.getvalue(), err.getvalue())


def _keras_policy() -> str | None:
    keras = sys.modules.get("keras")  # only when a command already imported it: never import Keras here
    return keras.config.dtype_policy().name if keras is not None else None


def _restore_keras_policy(name: str | None) -> None:
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.config.set_dtype_policy(name or "float32")


def run_cli_process(*args: str | os.PathLike | int, cwd: Path = REPO, timeout: float = 300) -> CliResult:
    """Run ``python -m simlib ARGS`` in a fresh process, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "simlib", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
