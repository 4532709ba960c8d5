"""A saved model folder, read without TensorFlow: its file names and what its ``config.json`` says.

A model folder (written by :meth:`simlib.model.Embedder.save`) holds ``model.keras`` (the backbone
and the head as two nested Keras models) and ``config.json`` (the :class:`~simlib.config.ModelConfig`
and the fingerprint). Inside an index folder the model that embedded the gallery is the sub-folder
:data:`MODEL_SUBDIR`. Reading a folder's config, fingerprint and trained flag here costs one small
JSON file: callers that only need to know *which* model a folder holds (is it trained, is it the
one that built this index, which is newest) never load Keras.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from simlib.config import ModelConfig, from_dict, to_dict
from simlib.errors import SimlibError
from simlib.storage import load_json, save_json

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
MODEL_SUBDIR = "model"  # where an index folder keeps the model that embedded its gallery


@dataclasses.dataclass(frozen=True)
class SavedModel:
    """What a model folder says about its model, read from ``config.json`` alone.

    Attributes:
        directory: the folder.
        config: the model's configuration.
        fingerprint: the fingerprint stored at save time (None: a folder from before it was stored).
    """

    directory: Path
    config: ModelConfig
    fingerprint: str | None

    @property
    def trained(self) -> bool:
        """True once simlib's training has changed the weights."""
        return self.config.trained

    @property
    def saved_at(self) -> float:
        """When ``model.keras`` was last written (seconds since the epoch): which model is newest."""
        return (self.directory / MODEL_FILE).stat().st_mtime


def read_model_folder(directory: str | os.PathLike) -> SavedModel:
    """The config and fingerprint of a model folder.

    Raises:
        SimlibError: no ``model.keras`` there, or a missing or damaged ``config.json``.
    """
    directory = Path(directory)
    if not (directory / MODEL_FILE).is_file():
        raise SimlibError(f"{directory} is not a simlib model folder (no {MODEL_FILE}); train or index first")
    meta = load_json(directory / CONFIG_FILE)
    try:
        config = from_dict(ModelConfig, dict(meta["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise SimlibError(f"{directory / CONFIG_FILE} is damaged ({type(e).__name__}: {e}); save it again") from None
    fingerprint = meta.get("fingerprint")
    return SavedModel(directory, config, fingerprint if isinstance(fingerprint, str) else None)


def saved_model(directory: str | os.PathLike) -> SavedModel | None:
    """:func:`read_model_folder`, or None when there is no readable model folder there."""
    try:
        return read_model_folder(directory)
    except (OSError, SimlibError):
        return None


def write_model_config(directory: str | os.PathLike, config: ModelConfig, fingerprint: str) -> None:
    """Write a model folder's ``config.json`` (the model file itself is Keras' to write)."""
    save_json(Path(directory) / CONFIG_FILE, {"config": to_dict(config), "fingerprint": fingerprint})
