"""The figures the README and docs/training.md quote are the recorded full course run's, checked here.

``docs/results/course.json`` is the record of one full run of the course (its command, machine, load,
run times and results, written from the run's own JSON files). The tables in the README's "What training
gives" and docs/training.md, and the course's run times in the README, are rendered from it by
:func:`simlib.evaluation.claims.results_table`; a figure edited on a page,
or a result edited in the record, fails these tests.
"""

from __future__ import annotations

import json
import re

from simlib.evaluation.claims import check_table, results_table, verdict
from tests.support import REPO

RECORD = REPO / "docs" / "results" / "course.json"
METHODS = ["pixels", "untrained backbone", "head before training", "trained"]
GROUPS = [
    ("image", "seen", "image-disjoint, classes trained on"),
    ("image", "unseen", "image-disjoint, classes held out of training"),
    ("class", "unseen", "class-disjoint, a model trained on the class split"),
]
TIME_NAMES = {
    "01_data_preparation": "`01_data_preparation`",
    "02_embeddings_baseline": "`02_embeddings_baseline`",
    "03_triplet_training": "`03_triplet_training`",
    "04_faiss_indexing": "`04_faiss_indexing`",
    "05_evaluation": "`05_evaluation`",
    "06_gradio_demo": "`06_gradio_demo`",
}


def record() -> dict:
    return json.loads(RECORD.read_text(encoding="utf-8"))


def training_table(r: dict) -> str:
    return results_table(r["rows"], r["differences"], GROUPS, METHODS, reference="trained")


def test_the_recorded_run_is_consistent():
    r = record()
    assert r["total_seconds"] == sum(t["seconds"] for t in r["notebook_seconds"].values())
    for d in r["differences"]:
        assert d["verdict"] == verdict(d["low"], d["high"]), d
        a = next(x for x in r["rows"] if (x["split"], x["part"], x["method"]) == (d["split"], d["part"], d["a"]))
        b = next(x for x in r["rows"] if (x["split"], x["part"], x["method"]) == (d["split"], d["part"], d["b"]))
        assert abs(a[d["metric"]] - b[d["metric"]] - d["difference"]) < 1e-9, d


def test_readme_and_training_doc_show_the_recorded_table():
    expected = training_table(record())
    for page in ("README.md", "docs/training.md"):
        missing = check_table((REPO / page).read_text(encoding="utf-8"), expected)
        assert not missing, f"{page}: rows that differ from docs/results/course.json: {missing[:2]}"


def test_readme_states_the_recorded_course_times():
    r = record()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name, t in r["notebook_seconds"].items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| {TIME_NAMES[name]} |"))
        assert row.endswith(f"| {t['seconds']} s |"), row
    assert f"{r['total_seconds']} s" in readme


def section(page: str, title: str) -> str:
    text = (REPO / page).read_text(encoding="utf-8")
    start = text.index(title)
    return text[start : text.index("\n## ", start + 1)]


def figures_not_recorded(text: str, r: dict) -> list[str]:
    """Three-decimal scores and "+x points [a, b]" intervals in ``text`` that the record does not hold."""
    scores = {f"{row[m]:.3f}" for row in r["rows"] for m in ("recall@1", "map@r")}
    intervals = {
        (f"{100 * d['difference']:+.1f}", f"{100 * d['low']:+.1f}", f"{100 * d['high']:+.1f}") for d in r["differences"]
    }
    bad = [f for f in re.findall(r"(?<![\d.])0\.\d{3}(?!\d)", text) if f not in scores]
    found = re.findall(r"([+-]\d+\.\d)(?: points)? \[([+-]\d+\.\d), ([+-]\d+\.\d)\]", text)
    return bad + [" ".join(i) for i in found if i not in intervals]


def test_every_figure_in_the_readme_section_is_a_recorded_one():
    r = record()
    text = section("README.md", "## What training gives")
    assert len(re.findall(r"\[", text)) > 5 and not figures_not_recorded(text, r)


def test_an_edited_figure_fails_the_check():
    r = record()
    page = training_table(r)
    assert not check_table(page, training_table(r))
    row = next(x for x in r["rows"] if (x["split"], x["part"], x["method"]) == ("image", "seen", "trained"))
    row["recall@1"] += 0.001  # one recorded result changed: the page no longer matches
    assert check_table(page, training_table(r))
    text = section("README.md", "## What training gives")
    first = re.search(r"([+-]\d+\.\d) points", text)  # whichever figure the record rendered first
    assert first, "the section quotes no difference in points"
    edited = f"{float(first.group(1)) + 0.4:+.1f} points"
    assert figures_not_recorded(text.replace(first.group(0), edited, 1), record())  # one figure edited


def test_the_pages_are_what_the_record_command_renders():
    """README.md and docs/training.md hold exactly what ``python -m benchmarks.record_course --render-only`` writes
    from the record: re-recording the course re-renders them, and no figure there is typed by hand."""
    from benchmarks.record_course import PAGES

    r = record()
    for page, render in PAGES.items():
        text = (REPO / page).read_text(encoding="utf-8")
        assert render(text, r) == text, (
            f"{page} differs from the record: run python -m benchmarks.record_course --render-only"
        )


def test_a_repeat_run_reports_the_results_that_differ_and_the_page_says_so(tmp_path):
    """``record_course --runs 2``: a second run of the same commit is compared with the first, figure by figure,
    run times and paths aside; the README's course paragraph then gives the range of times and that verdict."""
    from benchmarks.record_course import comparable_results, readme_times, repeat_run

    def run(folder, feedback, seconds):
        folder.mkdir()
        training = {"labels": {"best_epoch": 8, "seconds": seconds}, "feedback": {"with feedback": feedback},
                    "models": [str(folder / "model_labels")]}  # fmt: skip
        (folder / "03_training.json").write_text(json.dumps(training))
        (folder / "05_evaluation.json").write_text(json.dumps({"table": [{"r": 1}], "differences": [{"d": 2}]}))
        return folder

    first = comparable_results(run(tmp_path / "a", -0.54, 12.9))
    timing = {"load_average_at_start": 0.5, "notebook_seconds": {"01": {"seconds": 200}, "02": {"seconds": 210}}}
    same = repeat_run(timing, run(tmp_path / "b", -0.54, 14.0), first)
    assert same == {"total_seconds": 410, "load_average_at_start": 0.5, "results_that_differ": []}
    other = repeat_run(timing, run(tmp_path / "c", -0.55, 12.9), first)
    assert other["results_that_differ"] == ["training.feedback"]
    record = {"total_seconds": 397, "machine": "2 cores, otherwise idle", "load_average_at_start": 0.3}
    assert "2 runs of the same commit" in readme_times({**record, "repeat_runs": [same]})
    assert "397-410 s" in readme_times({**record, "repeat_runs": [same]})
    assert "same results to the last digit" in readme_times({**record, "repeat_runs": [same]})
    assert "differed between runs: training.feedback" in readme_times({**record, "repeat_runs": [other]})
