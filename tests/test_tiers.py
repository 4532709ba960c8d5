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


def test_no_test_of_this_run_uses_data_or_a_model_outside_a_slower_tier(request):
    """In a fast-tier run this sees the fast tier: none of its tests may read the data or build a ResNet50."""
    conftest = _conftest(request.config)
    for item in request.session.items:
        if conftest.INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            assert any(item.get_closest_marker(m) for m in conftest.NOT_FAST), item.nodeid


def test_the_course_runs_are_scheduled_first(request):
    """Two-minute tests at the end of a parallel run would leave the other worker idle: they go first."""
    items = request.session.items
    courses = [i for i, item in enumerate(items) if item.get_closest_marker("notebooks") and "smoke" in item.name]
    assert courses == list(range(len(courses)))
