"""Shared fixtures: real data from $SIMLIB_DATA, small real models, isolated caches; the test tiers.

Helpers (vectors, galleries, servers, the in-process CLI) live in ``tests/support``; this file holds
fixtures and hooks only.

Tiers: ``make test-fast`` runs the tests marked none of ``integration``, ``slow``, ``browser``,
``notebooks``, ``hostile``, ``milvus_server``, ``docker`` (no ResNet50, no data folder, no server, no notebook);
``make test`` runs everything.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

# Isolate every cache before TensorFlow or Keras is imported by any test module.
_TMP_HOME = Path(os.environ.get("PYTEST_SIMLIB_HOME", "/tmp/simlib-test-home"))
os.environ.setdefault("KERAS_HOME", str(_TMP_HOME / "keras"))
os.environ.setdefault("SIMLIB_CACHE", str(_TMP_HOME / "cache"))
os.environ.setdefault("GRADIO_TEMP_DIR", str(_TMP_HOME / "gradio"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

# Markers that keep a test out of the fast tier.
NOT_FAST = ("integration", "slow", "browser", "notebooks", "hostile", "milvus_server", "docker")
# Fixtures that read the data folder or build a ResNet50: a test using one is integration, marked or not.
INTEGRATION_FIXTURES = {"data_root", "product_dir", "product_table", "small_table", "tiny_model", "small_index_dir"}
_START = pytest.StashKey[float]()  # when the session started
_TIMING = pytest.StashKey[tuple[str, bool]]()  # the --max-seconds verdict


# ----------------------------------------------------------------------------- tiers
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--max-seconds",
        type=float,
        default=None,
        metavar="S",
        help="fail the run when it takes longer than S seconds of wall time (make test-fast: the fast tier's budget)",
    )


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the safety net must be in place when it does
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Safety net: a test that uses a data or model fixture without a tier marker is integration anyway."""
    for item in items:
        unmarked = not any(item.get_closest_marker(m) for m in NOT_FAST)
        if unmarked and INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    # The course runs (about two minutes each) go first: run in parallel (make test), a long test that
    # starts last leaves the other workers idle while it finishes. A stable sort: modules stay together.
    items.sort(key=lambda item: item.get_closest_marker("notebooks") is None or "smoke" not in item.name)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_START] = time.monotonic()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With ``--max-seconds``: a run over its wall-time budget fails (the tier grew too slow)."""
    budget = session.config.getoption("--max-seconds")
    if budget is None or session.config.getoption("collectonly"):
        return
    took = time.monotonic() - session.config.stash[_START]
    over = took > budget
    session.config.stash[_TIMING] = (f"wall time {took:.1f} s, budget {budget:g} s (--max-seconds)", over)
    if over and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    message, over = config.stash.get(_TIMING, (None, False))
    if message and over:
        terminalreporter.write_sep("=", f"FAILED: {message}: move the slowest tests above to a slower tier", red=True)
    elif message:
        terminalreporter.write_sep("=", message, green=True)


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data root ($SIMLIB_DATA, ./data or ../shared/data)."""
    from simlib.data import find_data_root

    root = find_data_root()
    if root is None or not (root / "fashion-product-images-small" / "styles.csv").is_file():
        msg = "no data: set SIMLIB_DATA to the folder holding fashion-product-images-small"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def product_dir(data_root: Path) -> Path:
    return data_root / "fashion-product-images-small"


@pytest.fixture(scope="session")
def product_table(product_dir: Path):
    from simlib.data import load_product_set

    return load_product_set(product_dir)


@pytest.fixture(scope="session")
def small_table(product_table):
    """48 real product images: 8 classes x 6."""
    from tests.support.vectors import stratified_rows

    return product_table.subset(stratified_rows(product_table.labels, 8, 6))


# ----------------------------------------------------------------------------- models and indexes
@pytest.fixture(scope="session")
def tiny_model():
    """An untrained 32 px embedding model (weights=None): fast and fully real."""
    from simlib.model import Embedder
    from tests.support.galleries import model_config

    return Embedder.build(model_config())


@pytest.fixture(scope="session")
def small_index_dir(tmp_path_factory, tiny_model, small_table) -> Path:
    """A real index folder over ``small_table`` built by ``tiny_model``."""
    from simlib.search import Searcher

    searcher, _ = Searcher.from_table(tiny_model, small_table, progress=False)
    return searcher.save(tmp_path_factory.mktemp("idx") / "index")


@pytest.fixture(scope="module")
def searcher(small_index_dir):
    """``small_index_dir`` loaded, one per test module (tests that change it put it back)."""
    from simlib.search import Searcher

    return Searcher.load(small_index_dir)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Playwright over Debian's /usr/bin/chromium) for a module's browser tests."""
    from tests.support.browser import chromium

    with chromium() as b:
        yield b
