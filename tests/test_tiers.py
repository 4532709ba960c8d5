"""The test tiers agree: the Makefile's fast tier, the registered markers and conftest's safety net."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.support import REPO


def _conftest(config: pytest.Config):
    path = str(REPO / "tests" / "conftest.py")
    return next(p for p in config.pluginmanager.get_plugins() if getattr(p, "__file__", None) == path)


def test_the_fast_tier_leaves_out_every_slower_marker(request):
    expr = re.search(r"^FAST_TIER := (.+)$", (REPO / "Makefile").read_text(), flags=re.M).group(1)
    left_out = set(re.findall(r"not (\w+)", expr))
    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {m.split(":")[0] for m in ini["markers"]}
    assert left_out == registered == set(_conftest(request.config).NOT_FAST)
    assert expr == " and ".join(f"not {m}" for m in sorted(left_out, key=expr.index))  # nothing else in it


class _Item:
    """Just enough of a pytest item for the collection hook: a name, fixture names and markers."""

    def __init__(self, name: str, fixtures: tuple[str, ...] = (), markers: tuple[str, ...] = ()) -> None:
        self.name, self.fixturenames = name, list(fixtures)
        self.markers = {m: getattr(pytest.mark, m) for m in markers}

    def get_closest_marker(self, name: str):
        return self.markers.get(name)

    def add_marker(self, mark) -> None:
        self.markers[mark.name] = mark


def test_a_test_that_reads_the_data_or_builds_a_resnet_is_integration_even_unmarked(request):
    """The safety net: the hook marks an unmarked test that uses a data or model fixture, and only such a test."""
    conftest = _conftest(request.config)
    items = [
        _Item("test_reads_data", ("small_table", "tmp_path")),
        _Item("test_pure", ("tmp_path",)),
        _Item("test_browser", ("small_index_dir",), ("browser",)),
    ]
    conftest.pytest_collection_modifyitems(request.config, items)
    assert [sorted(i.markers) for i in items] == [["integration"], [], ["browser"]]


def test_the_course_runs_are_scheduled_first(request):
    """Two-minute tests at the end of a parallel run would leave the other worker idle: they go first, and the
    rest keep their order (modules stay together)."""
    conftest = _conftest(request.config)
    items = [
        _Item("test_a"),
        _Item("test_the_course_runs_in_order_in_smoke_mode[product]", markers=("notebooks",)),
        _Item("test_b"),
        _Item("test_notebooks_have_no_outputs", markers=("notebooks",)),
        _Item("test_the_course_runs_in_order_in_smoke_mode[fashion-mnist]", markers=("notebooks",)),
    ]
    conftest.pytest_collection_modifyitems(request.config, items)
    assert [i.name for i in items] == [
        "test_the_course_runs_in_order_in_smoke_mode[product]",
        "test_the_course_runs_in_order_in_smoke_mode[fashion-mnist]",
        "test_a",
        "test_b",
        "test_notebooks_have_no_outputs",
    ]
