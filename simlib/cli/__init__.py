"""The ``simlib`` command (``simlib COMMAND --help``); :func:`main` runs it, :func:`build_parser` describes it."""

from simlib.cli.main import build_parser, main, run
from simlib.cli.options import add_data_options, add_model_options, quiet_tensorflow

__all__ = ["add_data_options", "add_model_options", "build_parser", "main", "quiet_tensorflow", "run"]
