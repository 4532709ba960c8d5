"""The same seed gives the same model: label-free and labelled training, in two separate processes.

What is not deterministic is said in docs/training.md ("Reproducibility"): the oneDNN setting
(``TF_ENABLE_ONEDNN_OPTS``) changes the last digits, and a time budget (``--minutes``) stops a run on a
busy machine at another epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import REPO

SCRIPT = """
import dataclasses, json, sys
sys.path.insert(0, {repo!r})
from tests.test_evaluation_fast import TINY, colour_table
from simlib.train import TrainConfig, fit

table = colour_table(10, 12)
config = dataclasses.replace(TINY, head_norm=True, head_hidden=8)
out = {{}}
for mode in ("self", "labels"):
    plan = TrainConfig(mode=mode, epochs=3, steps_per_epoch=4, classes_per_batch=4, images_per_class=2,
                       warmup_epochs=0, seed=3)
    run = fit(table, config, plan, progress=False)
    out[mode] = {{"loss": run.history["loss"], "embedding": run.embedder.embed_batch(table.arrays[:6]).tolist(),
                  "fingerprint": run.embedder.fingerprint}}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_label_free_and_labelled_training_give_the_same_model_from_the_same_seed_in_two_processes(tmp_path):
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT.format(repo=str(REPO))], capture_output=True, text=True, env=env,
            cwd=tmp_path, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for mode in ("self", "labels"):
        assert runs[0][mode] == runs[1][mode], mode  # the same losses, embeddings and weight fingerprint
