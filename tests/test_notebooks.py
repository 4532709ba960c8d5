"""The course runs top to bottom: all six notebooks in order, smoke mode, a real Jupyter kernel."""

import json
import re
from pathlib import Path

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


# The course runs on the product set (the default) and on Fashion-MNIST (what a learner without it gets) with
# random weights, and on the product set with a stand-in ImageNet weights file in Keras' cache, as a learner
# with internet runs it (WEIGHTS="auto" resolves to ImageNet). That path runs the notebooks whose code
# depends on the weights (02-05: models, heads, training, comparison); 01 and 06 only show data and serve
# what 03-05 built, and run on the random-weights courses.
COURSES = {
    "products": (None, "none", [n for n, _, _ in NOTEBOOKS]),
    "fashion-mnist": ("fashion-mnist", "none", [n for n, _, _ in NOTEBOOKS]),
    "imagenet": (None, "auto", [n for n, _, _ in NOTEBOOKS[1:5]]),
}


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("course_name", list(COURSES))
def test_the_course_runs_in_order_in_smoke_mode(tmp_path, data_root, monkeypatch, course_name):
    import papermill

    data, weights, names = COURSES[course_name]
    course = tmp_path / "course"
    executed = ARTIFACTS / "notebooks" / course_name
    executed.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kernel imports this checkout's simlib
    if course_name == "imagenet":  # the kernel's Keras finds "downloaded" ImageNet weights in its cache
        from tests.support.weights import write_standin_imagenet_weights

        write_standin_imagenet_weights(tmp_path / "keras")
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    parameters = {"SMOKE": True, "ARTIFACTS": str(course), "WEIGHTS": weights, "SEED": 0, "DATA_DIR": data}
    for name, record, keys in NOTEBOOKS:
        if name not in names:
            continue
        papermill.execute_notebook(
            str(REPO / "notebooks" / f"{name}.ipynb"),
            str(executed / f"{name}.ipynb"),  # kept for inspection (git-ignored)
            parameters=parameters,
            kernel_name="python3",
            cwd=str(REPO / "notebooks"),
            progress_bar=False,
            execution_timeout=300,
        )
        results = json.loads((course / record).read_text())
        missing = [k for k in keys if k not in results]
        assert not missing, f"{name} did not record {missing}"
        assert_clean_outputs(executed / f"{name}.ipynb")
        assert_claims_shown(executed / f"{name}.ipynb", results)
    recorded = {r: json.loads((course / r).read_text()) for n, r, _ in NOTEBOOKS if n in names}
    if course_name == "imagenet":
        check_imagenet_path(recorded, executed)
    else:
        check_recorded_results(recorded, course)


# What must never reach a learner's executed notebook: TensorFlow's C++ log lines (absl, oneDNN, CPU
# feature guard), Python warnings, tf.function retracing notices.
NOISE = re.compile(r"oneDNN|absl|cpu_feature_guard|^[IWEF]\d{4} |Warning|WARNING|warnings\.warn")
MAX_BLANK_RUN = 5  # consecutive empty lines in one output (Keras' progress bar leaves thousands)
MAX_LINES = 200  # lines in one stream output


def output_problems(nb) -> list[str]:
    """What is wrong with an executed notebook's outputs (empty when they are clean)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") != "stream":
                continue
            if out.get("name") == "stderr":
                problems.append(f"cell {i} wrote to stderr: {out.get('text', '')[:160]!r}")
            lines = out.get("text", "").split("\n")
            blank = run = 0
            for line in lines:
                run = run + 1 if not line.strip() else 0
                blank = max(blank, run)
            if blank > MAX_BLANK_RUN or len(lines) > MAX_LINES:
                problems.append(f"cell {i}: a flood of {len(lines)} lines ({blank} empty in a row)")
            noisy = [line for line in lines if NOISE.search(line)]
            if noisy:
                problems.append(f"cell {i} ({out.get('name')}): {noisy[0][:160]}")
    return problems


def assert_clean_outputs(path: Path) -> None:
    import nbformat

    problems = output_problems(nbformat.read(path, as_version=4))
    assert not problems, f"{path.name}: " + "; ".join(problems[:5])


def test_the_output_check_catches_log_lines_warnings_and_floods():
    import nbformat

    def nb_with(text, name="stderr"):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("x")
        cell.outputs = [nbformat.v4.new_output("stream", name=name, text=text)]
        nb.cells = [cell]
        return nb

    assert not output_problems(nb_with("loss 0.2 -> 0.1\n", "stdout"))
    assert output_problems(nb_with("anything at all\n", "stderr"))
    assert output_problems(nb_with("I0000 00:00:1.2 12 port.cc:153] oneDNN custom operations are on.\n"))
    assert output_problems(nb_with("WARNING: All log messages before absl::InitializeLog() is called\n"))
    assert output_problems(nb_with("/x.py:1: UserWarning: `shuffle=True` was passed\n"))
    assert output_problems(nb_with("TqdmWarning: IProgress not found.\n"))
    assert output_problems(nb_with("WARNING:tensorflow:5 out of the last 13 calls triggered tf.function retracing\n"))
    assert output_problems(nb_with("\n" * 50, "stdout"))


def _scores_are_sane(row: dict) -> None:
    """A retrieval row: recalls within [0, 1] and growing with k, some queries."""
    assert 0.0 <= row["recall@1"] <= row["recall@5"] <= row["recall@10"] <= 1.0, row
    assert 0.0 <= row["map@r"] <= 1.0 and row["n_queries"] > 0, row


def check_recorded_results(r: dict[str, dict], course) -> None:
    """What each notebook recorded in smoke mode (6 classes x 8 images at 32 px, untrained weights)."""
    data = r["01_data.json"]
    assert data["n_images"] == 48 and data["n_classes"] == 6 and data["image_size"] == 32
    for split in ("image_split", "class_split"):
        assert set(data[split]) == {"train", "val", "test"} and sum(data[split].values()) == 48, data[split]
        assert data[split]["train"] > 0 and data[split]["test"] > 0, data[split]

    baseline = r["02_baseline.json"]
    assert baseline["weights"] == "none" and baseline["image_size"] == 32
    assert [row["method"] for row in baseline["rows"]] == ["pixels 16x16", "untrained backbone"]
    assert len(baseline["layout_rows"]) == 3
    for row in baseline["rows"] + baseline["layout_rows"]:
        _scores_are_sane(row)
        assert row["n_queries"] <= data["image_split"]["test"]  # the image split's test images, at most

    training = r["03_training.json"]
    for run in ("labels", "labels_class", "self"):
        summary = training[run]
        assert 1 <= summary["best_epoch"] <= 3, summary  # SMOKE trains 3 epochs at most
        assert 0.0 <= summary["best_val_recall@1"] <= 1.0 and summary["seconds"] > 0, summary
        assert isinstance(summary["collapsed"], bool), summary
    assert all((Path(m) / "model.keras").is_file() for m in training["models"]) and len(training["models"]) == 3
    loop = training["explicit_loop"]
    assert loop["steps"] > 0 and 0.0 <= loop["val_recall@1_after"] <= 1.0, loop
    counts = training["batch_counts"]
    assert counts["hard (d_an < d_ap)"] <= counts["batch-all (loss > 0)"] <= counts["all valid triplets"], counts
    assert set(training["feedback"]) == {"before", "with feedback", "control (no feedback)"}

    indexing = r["04_indexing.json"]
    assert indexing["synthetic_n"] == 10_000 and indexing["gallery_size"] == 48  # the copies were removed again
    rows = {row["kind"]: row for row in indexing["rows"]}
    assert set(rows) == {"flat", "ivfpq"} | {f"hnsw ef={ef}" for ef in (16, 32, 64, 128)}
    assert rows["flat"]["recall@10"] == 1.0  # the exact index is its own ground truth
    assert all(0.0 <= row["recall@10"] <= 1.0 and row["queries/s"] > 0 for row in rows.values())
    # queries from the gallery's own subspace: HNSW is near exact at a wide beam, and not bad at a narrow one
    assert rows["hnsw ef=128"]["recall@10"] >= 0.95 and rows["hnsw ef=16"]["recall@10"] >= 0.8, rows
    assert rows["ivfpq"]["MiB"] > rows["flat"]["MiB"]  # IVF-PQ with re-ranking keeps the full vectors too

    evaluation = r["05_evaluation.json"]
    keys = [(row["split"], row["part"], row["method"]) for row in evaluation["table"]]
    assert len(keys) == len(set(keys))
    methods = ("pixels", "untrained backbone", "head before training", "trained")
    assert {("image", "all", m) for m in methods} <= set(keys)
    assert {("class", "unseen", m) for m in methods} <= set(keys)  # the class-split model, on classes it never saw
    pairs = {(d["split"], d["part"], d["a"], d["b"]) for d in evaluation["differences"]}
    assert ("image", "all", "trained", "head before training") in pairs  # what training added
    assert ("class", "unseen", "head before training", "untrained backbone") in pairs  # what the architecture added
    assert {("near-duplicate", "all", "label-free"), ("image", "all", "label-free")} <= set(keys)
    for row in evaluation["table"]:
        _scores_are_sane(row)
    per_class = evaluation["per_class_recall@1"]
    assert 1 <= len(per_class) <= 6 and all(0.0 <= v <= 1.0 for v in per_class.values()), per_class
    manifest = json.loads((course / "index" / "manifest.json").read_text())
    if evaluation["verdicts"] is not None:  # calibrated and saved with the index for 06
        assert manifest["verdicts"] == evaluation["verdicts"], (manifest.get("verdicts"), evaluation["verdicts"])

    demo = r["06_demo.json"]
    assert demo["api_matches_library"] is True and demo["local_url"].startswith("http://")
    assert not (course / "feedback").exists()  # the demo's verdicts went to its scratch folder
    assert len((course / "06_scratch" / "feedback" / "feedback.jsonl").read_text().splitlines()) == 1


def assert_claims_shown(path: Path, results: dict) -> None:
    """Every claim a notebook recorded holds against the results it recorded, and was shown."""
    import nbformat

    from simlib.evaluation.claims import check_claims

    claims = results.get("claims", [])
    problems = check_claims(claims, results.get("differences", []))
    assert not problems, f"{path.name}: " + "; ".join(problems[:3])
    nb = nbformat.read(path, as_version=4)
    shown = "\n".join(
        out.get("data", {}).get("text/markdown", "") for cell in nb.cells for out in cell.get("outputs", [])
    )
    unshown = [c["text"] for c in claims if c["text"] not in shown]
    assert not unshown, f"{path.name}: recorded claims not shown: {unshown[:2]}"


def check_imagenet_path(r: dict[str, dict], executed: Path) -> None:
    """The course with (stand-in) ImageNet weights: every row names them, none says "untrained"."""
    import nbformat

    baseline = r["02_baseline.json"]
    assert baseline["weights"] == "imagenet"
    assert [row["method"] for row in baseline["rows"]] == ["pixels 16x16", "ImageNet backbone"]
    evaluation = r["05_evaluation.json"]
    methods = {row["method"] for row in evaluation["table"]}
    assert {"ImageNet backbone", "head before training", "trained"} <= methods
    assert not any("untrained" in m for m in methods), methods
    assert evaluation["weights"] == "imagenet"
    for name in ("02_embeddings_baseline", "05_evaluation"):
        nb = nbformat.read(executed / f"{name}.ipynb", as_version=4)
        shown = [o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", [])]
        banner = next(text for text in shown if "Weights in use" in text)
        assert "Weights in use: ImageNet" in banner and "IMAGE_SIZE = 128" in banner, banner


def notebook_cells(name: str):
    import nbformat

    return nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4).cells


def test_every_notebook_starts_with_a_parameters_cell_and_ends_with_exercises_and_their_solutions():
    for name, _, _ in NOTEBOOKS:
        cells = notebook_cells(name)
        code = [c for c in cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), name
        assert "SMOKE" in code[0].source and "ARTIFACTS" in code[0].source, name
        assert "Time:" in cells[0].source, f"{name}: say how long it takes"
        assert "Course(" in code[1].source and "course.banner()" in code[1].source, f"{name}: show the weights banner"
        solutions = [c for c in cells if "solution" in c.metadata.get("tags", [])]
        first = cells.index(solutions[0]) if solutions else len(cells)
        exercises = [c for c in cells[: first - 1] if c.cell_type == "markdown"][-1].source
        assert "**Exercises**" in exercises, f"{name}: end with a summary and exercises"
        n = len(re.findall(r"^\d\. ", exercises, flags=re.M))
        assert n == 3 and exercises.count("*Hint:*") == n, f"{name}: three exercises, each with a hint"
        assert len(solutions) == n and cells[first - 1].source.startswith("### Solutions"), name
        assert all(c.metadata.get("jupyter", {}).get("source_hidden") for c in solutions), f"{name}: collapsed"
        assert not any("pip install" in c.source for c in code), f"{name}: no pip install cells"


def test_no_notebook_types_a_measured_figure_into_its_prose():
    """Scores, run times and speeds are printed by the run (Markdown built from its results), never typed."""
    from simlib.evaluation.claims import typed_figures

    for name, _, _ in NOTEBOOKS:
        for i, cell in enumerate(notebook_cells(name)):
            if cell.cell_type == "markdown":
                assert not typed_figures(cell.source), f"{name} cell {i}: typed figures {typed_figures(cell.source)}"
            # verdict words are chosen by simlib.evaluation.stats.verdict, not typed into a sentence
            # (a verdict word named as a term, in quotes or italics, is a definition, not a claim)
            text = cell.source if cell.cell_type == "markdown" else " ".join(re.findall(r'"[^"\n]*"', cell.source))
            text = re.sub(r'"[^"\n]*"|\*[^*\n]+\*', "", text) if cell.cell_type == "markdown" else text
            assert not re.search(r"\b(beats|outperforms|is better than)\b", text), f"{name} cell {i}: a typed verdict"
