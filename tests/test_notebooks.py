"""The course runs top to bottom: all six notebooks in order, smoke mode, a real Jupyter kernel."""

import json
import os

import pytest

from tests.support import ARTIFACTS, REPO

NOTEBOOKS = [
    ("01_data_preparation", "01_data.json", ["n_images", "image_split", "class_split"]),
    ("02_embeddings_baseline", "02_baseline.json", ["rows"]),
    ("03_triplet_training", "03_training.json", ["labels", "self"]),
    ("04_faiss_indexing", "04_indexing.json", ["rows", "gallery_size"]),
    ("05_evaluation", "05_evaluation.json", ["table", "per_class_recall@1"]),
    ("06_gradio_demo", "06_demo.json", ["local_url", "api_matches_library"]),
]


@pytest.mark.notebooks
@pytest.mark.slow
def test_the_course_runs_in_order_in_smoke_mode(tmp_path, data_root):
    import papermill

    course = tmp_path / "course"
    executed = ARTIFACTS / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = str(REPO)  # the kernel imports this checkout's simlib
    for name, record, keys in NOTEBOOKS:
        papermill.execute_notebook(
            str(REPO / "notebooks" / f"{name}.ipynb"),
            str(executed / f"{name}.ipynb"),  # kept for inspection (git-ignored)
            parameters={"SMOKE": True, "ARTIFACTS": str(course), "WEIGHTS": "none", "SEED": 0},
            kernel_name="python3",
            cwd=str(REPO / "notebooks"),
            progress_bar=False,
            execution_timeout=300,
        )
        results = json.loads((course / record).read_text())
        missing = [k for k in keys if k not in results]
        assert not missing, f"{name} did not record {missing}"
    table = json.loads((course / "05_evaluation.json").read_text())["table"]
    methods = {(r["split"], r["method"]) for r in table}
    assert {("image", "pixels"), ("image", "untrained"), ("image", "trained")} <= methods
    assert json.loads((course / "06_demo.json").read_text())["api_matches_library"] is True


def test_every_notebook_starts_with_a_parameters_cell_and_ends_with_exercises():
    import nbformat

    for name, _, _ in NOTEBOOKS:
        nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), name
        assert "SMOKE" in code[0].source and "ARTIFACTS" in code[0].source, name
        assert "Time:" in nb.cells[0].source, f"{name}: say how long it takes"
        assert "Exercises" in nb.cells[-1].source, f"{name}: end with a summary and exercises"
        assert not any("pip install" in c.source for c in code), f"{name}: no pip install cells"
