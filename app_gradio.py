"""The simlib demo: upload, webcam or clipboard image in, the top-K most similar gallery images out.

    python app_gradio.py                       # serve artifacts/ (built and cached on first start)
    python app_gradio.py --share --auth me:pw  # a public link, behind a password
    python app_gradio.py --allow-add           # visitors may add their image to the gallery
    python app_gradio.py --model DIR           # serve this trained model (default: the newest one found)

The model: ``--model DIR``, else the newest trained model under the artifacts folder (``model/``, or the
course's ``course/model_labels``), else a fresh one (``--weights``); the status line says which and why.
With an untrained model and a labelled gallery the page offers "Train a model on this gallery" (on
localhost by default; on a share link or a public address only with ``--allow-train``).

This file is the options and ``main``; what the app does is in :mod:`simlib.app` (the service, the page,
the server).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from simlib.app.server import DEFAULT_HOST, DEFAULT_PORT, run
from simlib.app.service import DEFAULT_K
from simlib.cli import add_data_options, add_model_options, quiet_tensorflow


def build_parser() -> argparse.ArgumentParser:
    """The app's options (``--data``, ``--model``, ``--weights``, ``--image-size`` as in the simlib CLI)."""
    p = argparse.ArgumentParser(prog="app_gradio.py", description="Serve the simlib similarity-search demo.")
    add_data_options(p)
    add_model_options(p)
    # None means "not given": the cached index's own model is kept unless these ask for another.
    p.set_defaults(weights=None, embedding_dim=None)
    p.add_argument("--artifacts", default="artifacts", metavar="DIR", help="index cache (default: artifacts)")
    p.add_argument(
        "--index",
        metavar="DIR",
        help="serve this index folder as it is (any backend, e.g. one built with `simlib index --backend milvus`)",
    )
    p.add_argument("--uri", metavar="URI", help="with --index: reach its Milvus collection at this address")
    p.add_argument(
        "--mmap",
        action="store_true",
        help="with --index: map the FAISS index's vectors from disk, not into memory (read-only; indexes past RAM)",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--share", action="store_true", help="also create a temporary public link (use with --auth)")
    p.add_argument(
        "--auth", metavar="USER:PASSWORD", default=os.environ.get("SIMLIB_AUTH"), help="require a login ($SIMLIB_AUTH)"
    )
    p.add_argument("-k", type=int, default=DEFAULT_K, help=f"results shown at first (default {DEFAULT_K})")
    p.add_argument(
        "--mcp",
        action="store_true",
        default=os.environ.get("SIMLIB_MCP", "").lower() in ("1", "true", "yes"),
        help="also serve the API as an MCP server (/gradio_api/mcp): its endpoints become tools for AI assistants "
        "($SIMLIB_MCP=1)",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="pick up photos added to, changed in or removed from the gallery's folder while the app runs",
    )
    p.add_argument(
        "--allow-add",
        action="store_true",
        help="let visitors add their image to the gallery (off by default: anyone with the link could)",
    )
    p.add_argument(
        "--allow-train",
        action="store_true",
        help="offer 'Train a model on this gallery' on a share link or a public --host too "
        "(by default only on localhost: training keeps the CPU busy for minutes)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Start the app: open (or build and cache) the gallery index, then serve it until Ctrl-C."""
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
