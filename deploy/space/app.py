"""The Hugging Face Space's entry point: the simlib demo serving ./gallery on 0.0.0.0:7860.

`deploy/space/assemble.sh` puts this file beside app_gradio.py, the simlib package and the gallery. Extra app
options come from the Space variable SIMLIB_SPACE_ARGS (e.g. "--image-size 128 -k 8"); a login from the Space
secret SIMLIB_AUTH (user:password), which app_gradio.py reads itself.
"""

import os
import shlex
import sys

from app_gradio import main

SPACE_ARGS = ["--data", "gallery", "--artifacts", "artifacts", "--host", "0.0.0.0", "--port", "7860"]


def space_argv(extra: str | None = None) -> list[str]:
    """The app's options on a Space: the fixed ones, then SIMLIB_SPACE_ARGS (later options win)."""
    extra = os.environ.get("SIMLIB_SPACE_ARGS", "") if extra is None else extra
    return [*SPACE_ARGS, *shlex.split(extra)]


if __name__ == "__main__":
    sys.exit(main(space_argv()))
