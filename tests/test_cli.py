"""The real command line: ``simlib.cli.main`` in this process, and once ``python -m simlib`` as a user runs it."""

import json
import os

import pytest

from tests.support.cli import run_cli, run_cli_process
from tests.support.vectors import stratified_rows


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, product_table):
    """A product-layout gallery of 40 real images (symlinked) plus one corrupt file listed in styles.csv."""
    root = tmp_path_factory.mktemp("gallery")
    (root / "images").mkdir()
    rows = stratified_rows(product_table.labels, 5, 8)
    lines = ["id,gender,articleType,baseColour,productDisplayName"]
    for r in rows:
        pid = int(product_table.ids[r])
        os.symlink(product_table.paths[r], root / "images" / f"{pid}.jpg")
        a = product_table.attrs(r)
        lines.append(f"{pid},{a['gender']},{product_table.label(r)},{a['baseColour']},{a['productDisplayName']}")
    (root / "images" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    lines.append("1,Men,Broken,Black,a corrupt file")
    (root / "styles.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def built(gallery, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "index"
    res = run_cli("index", "--data", str(gallery), "--out", str(out), "--weights", "none", "--image-size", "32")
    return res, out


@pytest.mark.integration
def test_index_builds_and_reports_the_corrupt_image(built, gallery):
    res, out = built
    assert res.returncode == 3, res.stderr  # done, with skipped images
    assert "indexed 40 images" in res.stdout and "skipped 1" in res.stdout
    assert res.stdout.splitlines()[-1] == "done: 40 indexed, 1 skipped"
    assert f"skipped {gallery / 'images' / '1.jpg'}" in res.stderr
    assert "Traceback" not in res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 40 and manifest["dimension"] == 128 and manifest["kind"] == "flat"
    assert (out / "model" / "model.keras").is_file()


@pytest.mark.integration
def test_search_mmap_gives_the_same_hits(built):
    _, out = built
    first = json.loads((out / "records.jsonl").read_text().splitlines()[3])
    runs = [
        run_cli("search", first["path"], "--index", str(out), "-k", "5", "--json", *extra) for extra in ([], ["--mmap"])
    ]
    assert all(r.returncode == 0 for r in runs), runs[1].stderr
    assert json.loads(runs[0].stdout)["hits"] == json.loads(runs[1].stdout)["hits"]


@pytest.mark.integration
def test_search_json_and_table(built, gallery):
    _, out = built
    first = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    res = run_cli("search", first["path"], "--index", str(out), "-k", "3", "--json")
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["path"] == first["path"] and hits[0]["label"] == first["label"]
    assert {"rank", "path", "score", "label", "id", "attributes"} <= set(hits[0])
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    res = run_cli(
        "search",
        first["path"],
        "--index",
        str(out),
        "-k",
        "40",
        "--filter",
        f"label={first['label']}",
        "--exclude-self",
    )
    assert res.returncode == 0, res.stderr
    body = res.stdout.splitlines()
    assert body[0].split() == ["rank", "score", "label", "path"]
    assert len(body) == 1 + 7  # the 8 images of that class but the query itself
    assert first["path"] not in res.stdout and all(first["label"] in line for line in body[1:])


@pytest.mark.integration
def test_eval_prints_recall_as_json(gallery):
    res = run_cli(
        "eval", "--data", str(gallery), "--split", "all", "--weights", "none", "--image-size", "32", "--json", "--quiet"
    )
    assert res.returncode == 3, res.stderr  # done, with the corrupt image skipped
    scores = json.loads(res.stdout)
    assert {"recall@1", "recall@5", "recall@10", "map@r", "n_queries"} <= set(scores)
    assert scores["n_queries"] == 40 and 0 <= scores["recall@1"] <= scores["recall@5"] <= scores["recall@10"] <= 1
    vs = scores["vs_pixels"]["recall@1"]  # paired with the pixel baseline on the same queries
    assert vs["low"] <= vs["difference"] <= vs["high"] and vs["verdict"] and vs["n_queries"] == 40
    assert "skipped" in res.stderr and "Traceback" not in res.stderr


def _one_clear_error(res, *words):
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("simlib: error:")]
    assert len(errors) == 1, res.stderr
    for w in words:
        assert w in errors[0], errors[0]


@pytest.mark.integration
def test_user_errors_give_one_line_and_exit_1(built, tmp_path, gallery):
    _, out = built
    _one_clear_error(
        run_cli("index", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "i"), "--weights", "none"),
        "does not exist",
    )
    (tmp_path / "empty").mkdir()
    _one_clear_error(
        run_cli("index", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "i"), "--weights", "none"),
        "no images",
    )
    (tmp_path / "q.jpg").write_text("just text")
    _one_clear_error(run_cli("search", str(tmp_path / "q.jpg"), "--index", str(out)), "not an image")
    good = json.loads((out / "records.jsonl").read_text().splitlines()[0])["path"]
    _one_clear_error(run_cli("search", good, "--index", str(tmp_path / "noindex")), "does not exist")
    # an index paired with a model that did not build it
    res = run_cli(
        "index",
        "--data",
        str(gallery),
        "--out",
        str(tmp_path / "second"),
        "--weights",
        "none",
        "--image-size",
        "48",
        "--quiet",
    )
    assert res.returncode == 3  # the gallery's corrupt image is skipped
    _one_clear_error(
        run_cli("search", good, "--index", str(out), "--model", str(tmp_path / "second" / "model")), "different model"
    )


def test_usage_errors_exit_2():  # argparse only: no model, no data
    res = run_cli("search")
    assert res.returncode == 2 and "usage:" in res.stderr
    res = run_cli("index", "--out", "x", "--kind", "lsh")
    assert res.returncode == 2


@pytest.mark.integration
def test_index_with_mixed_bfloat16_precision(gallery, tmp_path):
    out = tmp_path / "bf16"
    res = run_cli(
        "index", "--data", str(gallery), "--out", str(out), "--weights", "none", "--image-size", "32",
        "--precision", "mixed_bfloat16", "--quiet",
    )  # fmt: skip
    assert res.returncode == 3, res.stderr  # done, with the gallery's corrupt image skipped
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_config"]["precision"] == "mixed_bfloat16"
    res = run_cli("search", str(gallery / "images" / os.listdir(gallery / "images")[0]), "--index", str(out), "--json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["hits"]) == 5


@pytest.mark.integration
def test_python_m_simlib_runs_as_a_user_runs_it(built):
    """The one real process: ``python -m simlib`` finds the package, prints JSON and exits with main's code."""
    _, out = built
    first = json.loads((out / "records.jsonl").read_text().splitlines()[2])
    res = run_cli_process("search", first["path"], "--index", out, "-k", "4", "--json")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    in_process = run_cli("search", first["path"], "--index", out, "-k", "4", "--json")
    assert json.loads(res.stdout)["hits"] == json.loads(in_process.stdout)["hits"]
    assert json.loads(res.stdout)["hits"][0]["path"] == first["path"]
    missing = run_cli_process("search", first["path"], "--index", out.parent / "nowhere")
    assert missing.returncode == 1 and missing.stderr.startswith("simlib: error:")
