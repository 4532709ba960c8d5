"""``python -m simlib`` runs the command line."""

from simlib.cli import run

run()
