"""Packaging stays consistent: pyproject vs environment.yml, notebooks without outputs, README commands."""

import json
import re
import tomllib

from tests.support import REPO


def _names_and_specs(lines):
    out = {}
    for line in lines:
        line = line.split(";")[0].strip()
        m = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2).replace(" ", "")
    return out


def test_environment_yml_pins_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["notebooks"]
    py = _names_and_specs(wanted)
    py.pop("tensorflow", None)  # the conda env is Linux x86-64: tensorflow-cpu
    env_lines, in_pip = [], False
    for line in (REPO / "environment.yml").read_text().splitlines():
        if line.strip() == "- pip:":
            in_pip = True
            continue
        if in_pip and line.strip().startswith("- ") and not line.strip().startswith("- -e"):
            env_lines.append(line.strip()[2:])
    env = _names_and_specs(env_lines)
    assert env == py
    assert "python=3.11" in (REPO / "environment.yml").read_text()


def test_committed_notebooks_have_no_outputs():
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs"), f"{path.name}: strip outputs before committing"
                assert cell.get("execution_count") is None, f"{path.name}: strip execution counts"


def test_readme_documents_the_two_commands_and_ci_runs_the_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_importing_simlib_loads_no_heavy_library():
    import subprocess
    import sys

    code = (
        "import sys, simlib, simlib.cli, simlib.search, simlib.index\n"
        "print(sorted(m for m in ('tensorflow', 'faiss', 'gradio', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
