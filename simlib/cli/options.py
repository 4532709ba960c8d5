"""What several ``simlib`` commands (and the app's parser) share: options, model and data loading, exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from simlib.data import cache_dir, default_data_spec, load_dataset
from simlib.data import materialize as write_pngs
from simlib.errors import SimlibError
from simlib.index import BACKENDS, DEFAULT_BACKEND
from simlib.model import open_embedder

EXIT_PARTIAL = 3  # the command finished, but skipped unreadable images


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", metavar="DIR", help="a model folder saved by simlib (carries its own image size)")
    g.add_argument(
        "--weights",
        default="auto",
        metavar="auto|imagenet|none|PATH",
        help="backbone weights when no --model is given (default: auto = ImageNet if it can be had, else untrained)",
    )
    g.add_argument("--image-size", type=int, metavar="N", help="input side in pixels (default 64)")
    g.add_argument("--embedding-dim", type=int, default=128, metavar="D", help="embedding size (default 128)")
    g.add_argument(
        "--precision",
        choices=["float32", "mixed_bfloat16"],
        help="compute precision (default float32; mixed_bfloat16 is faster on CPUs with AVX-512 BF16 / AMX)",
    )


def add_data_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--data",
        required=required,
        metavar="DIR",
        help="image folder (product layout, class sub-folders or flat) or 'fashion-mnist'; "
        "default: $SIMLIB_DATA, ./data or ../shared/data",
    )
    p.add_argument("--label-column", default="articleType", help="product layout: styles.csv label column")


def add_backend_options(p: argparse.ArgumentParser, search: bool = False) -> None:
    g = p.add_argument_group("backend")
    g.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default=None if search else DEFAULT_BACKEND,
        help="checked against the index's manifest" if search else "faiss (in-process, default) or milvus",
    )
    g.add_argument(
        "--uri",
        metavar="URI",
        help="Milvus: a path ending in .db (Milvus Lite) or http://host:19530 (token in $MILVUS_TOKEN)"
        + ("; default: the manifest's" if search else ""),
    )


def parse_filters(items: Sequence[str] | None) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SimlibError(f"--filter takes KEY=VALUE (e.g. baseColour=Blue), not {item!r}")
        filters.setdefault(key, []).append(value)
    return filters


def get_model(args: argparse.Namespace):
    """The :class:`~simlib.model.Embedder` named by ``--model``, else a fresh one from ``--weights``."""
    return open_embedder(
        args.model,
        image_size=args.image_size,
        weights=args.weights,
        embedding_dim=args.embedding_dim,
        precision=getattr(args, "precision", None),
    )


def get_table(args: argparse.Namespace, materialize: bool = False):
    """Load ``--data`` (or the default data); Fashion-MNIST is written out as PNGs when files are needed."""
    spec = args.data or default_data_spec()
    table = load_dataset(spec, label_column=args.label_column)
    if materialize and table.paths is None:
        name = spec.replace(":", "-")
        table = write_pngs(table, cache_dir() / name)
    return table


def quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def print_any_file_name() -> None:
    # File names that are not valid UTF-8 reach Python as lone surrogates; print their original bytes
    # instead of failing with UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        utf8 = (getattr(stream, "encoding", "") or "").lower().replace("-", "") == "utf8"
        if utf8 and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")


def report_skipped(table, skipped: dict[int, str]) -> None:
    """One stderr line per unreadable image: its path and why."""
    for row, reason in skipped.items():
        source = str(table.source(row))
        # open_image's reasons already start with the path
        print(f"skipped {reason}" if reason.startswith(source) else f"skipped {source}: {reason}", file=sys.stderr)
