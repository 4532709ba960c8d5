"""How ``tests/data/legacy_index_v1/`` was written: by simlib at commit 0662bd3 (manifest format 1).

Kept as a record only: it uses that commit's API (``save(extra=...)``, manifest dicts) and does not
run against today's simlib. ``tests/test_index.py`` loads the folder with today's code and compares its
answers with ``expected.json``. The save replaces the whole output folder, so write it elsewhere and
copy this file back:

    git worktree add /tmp/legacy 0662bd3 && cd /tmp/legacy && python generate.py /tmp/legacy_index_v1
"""

import json
import sys
from pathlib import Path

import numpy as np

from simlib.config import IndexConfig, ModelConfig, to_dict
from simlib.index import Record, VectorIndex

out = Path(sys.argv[1])
rng = np.random.default_rng(13)
x = rng.standard_normal((21, 4)) @ rng.standard_normal((4, 16)) + 0.1 * rng.standard_normal((21, 16))
x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
colours = ["red", "green", "blue"]
records = [
    Record(
        id=100 + i,
        path=f"/gallery/{['shirts', 'shoes'][i % 2]}/{i}.jpg",
        label=["shirts", "shoes"][i % 2],
        attributes={"colour": colours[i % 3], "season": "summer" if i % 4 < 2 else "winter"},
    )
    for i in range(21)
]
index = VectorIndex.build(x, records, IndexConfig(kind="flat"))
index.remove([120])  # the last id: next_id keeps it from being handed out again
# what Searcher.from_table, open_gallery, Searcher.add_images/remove and calibrate_threshold set
index.manifest.update(model_fingerprint="0123456789abcdef", data="legacy gallery")
index.manifest["skipped_paths"] = ["/gallery/shirts/broken.jpg"]
index.manifest["next_id"] = 121
index.manifest["threshold"] = {
    "n_queries": 4,
    "seed": 0,
    "val": 0.2,
    "method": "top-1 same-class precision",
    "target": 0.9,
    "precision": 1.0,
    "reached": True,
    "score": 0.5,
    "calibrated_at": "2025-01-01T00:00:00+00:00",
}
extra = {  # Searcher.save's extra entries (no model/ folder is written here)
    "backend": "faiss",
    "model_fingerprint": "0123456789abcdef",
    "model_config": to_dict(ModelConfig(image_size=32, embedding_dim=16)),
    "model_dir": "model",
}
index.save(out, extra)
queries = (x[[0, 5, 11]] + 0.05 * rng.standard_normal((3, 16))).astype(np.float32)
expected = {"k": 5, "queries": queries.tolist(), "filters": {"colour": ["red", "blue"]}}
for name, filters in (("plain", None), ("filtered", expected["filters"])):
    s, i = index.search(queries, 5, filters)
    expected[name] = {"ids": i.tolist(), "scores": s.tolist()}
(out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
