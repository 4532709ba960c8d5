"""The served app through its HTTP API (gradio_client): search, explain, feedback, add, files, auth, load."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from simlib.app import GalleryService
from simlib.app.results import collapse_threshold, filter_fields
from simlib.app.service import CONCURRENCY_LIMIT, EXPLAIN_SIZE
from tests.support import ARTIFACTS, REPO
from tests.support.servers import free_port, served_demo

AUTH = ("ana", "s3cret-pass")


@pytest.fixture(scope="module")
def query_path(searcher) -> str:
    return searcher.index.records()[5].path


@pytest.fixture(scope="module")
def server(searcher, small_index_dir):
    """The real app on 127.0.0.1 with its real launch settings; yields its URL.

    Its feedback goes to ``feedback/`` beside the index folder (see ``simlib.search.gallery.app_folders``).
    """
    with served_demo(searcher, k=4, artifacts=small_index_dir) as url:
        yield url


@pytest.fixture(scope="module")
def copies_index_dir(tmp_path_factory, small_table, tiny_model) -> Path:
    """An index (in ``<artifacts>/index``) of 12 real images plus exact copies of the first two, in another folder."""
    import shutil

    from simlib.data import ImageTable
    from simlib.search import Searcher

    copies = tmp_path_factory.mktemp("copies")
    paths = [small_table.paths[i] for i in range(0, 48, 4)]
    for n in range(2):
        shutil.copy(paths[n], copies / f"copy{n}.jpg")
    paths += [str(copies / f"copy{n}.jpg") for n in range(2)]
    labels = [small_table.labels[i] for i in range(0, 48, 4)] + [small_table.labels[0], small_table.labels[4]]
    table = ImageTable(ids=np.arange(len(paths)), paths=tuple(paths), labels=np.asarray(labels, dtype=object))
    searcher, _ = Searcher.from_table(tiny_model, table, progress=False)
    return searcher.save(tmp_path_factory.mktemp("artifacts") / "index")


@pytest.fixture
def copies_artifacts(copies_index_dir, tmp_path) -> Path:
    """A fresh, writable artifacts folder holding a copy of ``copies_index_dir``."""
    import shutil

    shutil.copytree(copies_index_dir, tmp_path / "artifacts" / "index")
    return tmp_path / "artifacts"


def client(url: str, tmp_path: Path, auth=None):
    from gradio_client import Client

    return Client(url, auth=auth, download_files=str(tmp_path), verbose=False)


def search(searcher, image, k, filters=None, collapse=None):
    """``(gallery, results, status)`` of the app's service for one query, as ``/search`` returns them."""
    return GalleryService(searcher).search(image, k, filters, collapse).outputs()


def brute_force(searcher, image, k, filters=None):
    """Ids and scores of the top-k by a plain dot product over every (matching) gallery vector."""
    q = searcher.embedder.embed_images([image])[0]
    records = searcher.index.records()
    keep = [i for i, r in enumerate(records) if all(r.attributes.get(a) in v for a, v in (filters or {}).items())]
    scores = searcher.index.vectors()[keep] @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [records[keep[i]].id for i in order], scores[order]


# ----------------------------------------------------------------------------- pure functions


# ----------------------------------------------------------------------------- the real server
@pytest.mark.integration
def test_api_matches_searcher_query(server, searcher, query_path, tmp_path):
    c = client(server, tmp_path)
    gallery, results, status = c.predict(app_file(query_path), 7, api_name="/search")
    # Near-duplicates are merged by default, at the threshold suited to the model.
    at = collapse_threshold(searcher.info().to_dict())
    hits = searcher.query(query_path, k=7, collapse_duplicates=at)
    assert results["collapse"] == at and results["merged"] == sum(h.duplicates for h in hits)
    assert [(h["duplicates"], h["weak"]) for h in results["hits"]] == [(h.duplicates, False) for h in hits]
    assert results["no_good_match"] is None  # not calibrated
    assert len(gallery) == 7 and all(Path(g["image"]).is_file() for g in gallery)
    assert [g["caption"] for g in gallery] == [h.caption() for h in hits]
    assert [(h["id"], h["label"]) for h in results["hits"]] == [(h.id, h.label) for h in hits]
    # paths relative to the gallery's root: no server path in the answer
    assert all(not Path(r["gallery_path"]).is_absolute() for r in results["hits"])
    assert all(h.path.endswith("/" + r["gallery_path"]) for h, r in zip(hits, results["hits"], strict=True))
    np.testing.assert_allclose([h["score"] for h in results["hits"]], [h.score for h in hits], atol=1e-5)
    assert "7 results" in status
    # The filters are optional keyword parameters named after the attributes, as is collapse.
    _, results, _ = c.predict(app_file(query_path), 3, baseColour=["Black", "White"], api_name="/search")
    assert results["hits"] and all(h["attributes"]["baseColour"] in ("Black", "White") for h in results["hits"])
    _, results, status = c.predict(app_file(query_path), 7, collapse=False, api_name="/search")
    assert [h["id"] for h in results["hits"]] == [h.id for h in searcher.query(query_path, k=7)]
    assert results["collapse"] is None and results["merged"] is None and "merged" not in status


def app_doc_block(starts_with: str) -> str:
    """The code block of docs/app.md (the app's API examples) whose first line starts with ``starts_with``."""
    text = (REPO / "docs" / "app.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if b.startswith(starts_with))


@pytest.mark.integration
def test_docs_http_api_example_matches_searcher_query(server, searcher, query_path):
    # The plain-HTTP example of docs/app.md (kept-alive connection), run as written against the real app.
    code = app_doc_block("import json, httpx").replace('"http://127.0.0.1:7860/"', repr(server))
    scope: dict = {}
    exec(code.replace('open("query.jpg"', f"open({query_path!r}"), scope)
    hits = searcher.query(query_path, k=10, collapse_duplicates=collapse_threshold(searcher.info().to_dict()))
    assert [h["id"] for h in scope["results"]["hits"]] == [h.id for h in hits]
    assert len(scope["gallery"]) == len(hits) and "10 results" in scope["status"]


@pytest.mark.integration
def test_api_explain_and_feedback(server, searcher, query_path, small_index_dir, tmp_path):
    """/explain returns both heat maps and the score; /feedback stores a verdict that reads back."""
    from gradio_client.exceptions import AppError
    from PIL import Image

    from simlib.search.feedback import FeedbackStore

    c = client(server, tmp_path)
    assert {"/search", "/explain", "/feedback"} <= set(
        c.view_api(print_info=False, return_format="dict")["named_endpoints"]
    )
    second = searcher.query(query_path, k=2)[1]
    query_heat, result_heat, details = c.predict(app_file(query_path), second.id, api_name="/explain")
    assert Image.open(query_heat).size == Image.open(result_heat).size == (192, EXPLAIN_SIZE)
    assert details["id"] == second.id and details["score"] == pytest.approx(second.score, abs=1e-5)
    store = FeedbackStore(Path(small_index_dir).parent / "feedback")
    before = len(store.read()) if store.path.exists() else 0
    message = c.predict(app_file(query_path), second.id, "not_similar", api_name="/feedback")
    assert message.startswith(f"Your verdict on gallery image {second.id}: **not similar**")
    entries = store.read()
    assert len(entries) == before + 1 and entries[-1].result_id == second.id and entries[-1].verdict == "not_similar"
    assert entries[-1].score == pytest.approx(second.score, abs=1e-5)

    with pytest.raises(AppError, match="not in the index"):
        c.predict(app_file(query_path), 99_999, api_name="/explain")
    with pytest.raises(AppError, match="verdict must be"):
        c.predict(app_file(query_path), second.id, "love it", api_name="/feedback")
    assert len(store.read()) == before + 1


@pytest.mark.integration
def test_add_to_gallery_only_with_the_flag(server, searcher, copies_artifacts, small_table, tmp_path):
    """Without --allow-add there is no such endpoint; with it an added image is indexed, saved and served."""
    import httpx

    assert (
        "/add_to_gallery"
        not in client(server, tmp_path).view_api(print_info=False, return_format="dict")["named_endpoints"]
    )
    from simlib.search import Searcher

    growing = Searcher.load(copies_artifacts / "index")
    with served_demo(growing, artifacts=copies_artifacts, allow_add=True) as url:
        c = client(url, tmp_path)
        new = small_table.paths[1]
        message, status = c.predict(app_file(new), api_name="/add_to_gallery")
        assert message.startswith("Added to the gallery as image 14") and status.startswith("gallery: 15 images")
        _, results, _ = c.predict(app_file(new), 1, api_name="/search")
        added = results["hits"][0]
        assert added["id"] == 14 and Path(added["gallery_path"]).parent == Path("gallery_uploads")
        files = url.rstrip("/") + "/gradio_api/file="
        on_server = str((copies_artifacts / added["gallery_path"]).resolve())
        assert httpx.get(files + on_server).status_code == 200  # served although added after launch
        for private in ("index/manifest.json", "index/model/config.json"):
            assert httpx.get(files + str((copies_artifacts / private).resolve())).status_code == 403, private


def app_file(path):
    from gradio_client import handle_file

    return handle_file(str(path))


@pytest.mark.integration
def test_bad_uploads_get_one_clear_error(server, tmp_path):
    from gradio_client.exceptions import AppError

    c = client(server, tmp_path)
    text = tmp_path / "holiday.png"
    text.write_text("<html>not an image</html>")
    with pytest.raises(AppError, match=r"^holiday\.png: not an image Pillow can read"):
        c.predict(app_file(text), 3, api_name="/search")


@pytest.mark.integration
def test_only_gallery_files_are_served(server, searcher, small_index_dir):
    import httpx

    gallery_image = searcher.index.records()[0].path
    base = server.rstrip("/") + "/gradio_api/file="
    assert httpx.get(base + gallery_image).status_code == 200
    for path in ("/etc/passwd", str(small_index_dir / "manifest.json"), str(small_index_dir / "model" / "model.keras")):
        assert httpx.get(base + path).status_code == 403, path
    styles = Path(gallery_image).parents[1] / "styles.csv"  # beside the gallery's folder, not in it
    assert httpx.get(base + str(styles)).status_code == 403


@pytest.mark.integration
def test_server_files_cannot_be_named_as_queries(server, searcher):
    """A hand-made request naming a server path (Gradio's file marker or not) is refused, not read."""
    import httpx

    gallery_image = searcher.index.records()[0].path
    cases = [
        ({"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "not uploaded by a user"),  # Gradio's check
        ({"path": "/etc/passwd"}, "must be uploaded"),  # ours: Gradio lets a payload without the marker through
        ({"path": gallery_image}, "must be uploaded"),
    ]
    no_filters = [[]] * len(filter_fields(searcher.index.attribute_values()))
    for payload, message in cases:
        data = [payload, 3, *no_filters, True]
        r = httpx.post(server.rstrip("/") + "/gradio_api/call/search", json={"data": data})
        event = r.json()["event_id"]
        answer = httpx.get(server.rstrip("/") + f"/gradio_api/call/search/{event}", timeout=30).text
        assert "event: error" in answer and message in answer and "hits" not in answer, answer


@pytest.mark.integration
def test_uploads_over_the_limit_are_refused(server):
    import httpx

    big = b"\x89PNG" + bytes(11 * 1024 * 1024)
    r = httpx.post(server.rstrip("/") + "/gradio_api/upload", files={"files": ("big.png", big, "image/png")})
    assert r.status_code == 413, r.text


@pytest.mark.integration
def test_auth_refuses_anonymous_requests(searcher, small_index_dir, query_path, tmp_path):
    import httpx

    with served_demo(searcher, auth=AUTH, artifacts=small_index_dir) as url:
        for path in ("config", "gradio_api/info"):
            assert httpx.get(url + path).status_code == 401, path
        r = httpx.post(url + "gradio_api/call/search", json={"data": [{"path": query_path}, 3]})
        assert r.status_code == 401
        assert httpx.get(url + "gradio_api/file=" + query_path).status_code == 401
        gallery, _, _ = client(url, tmp_path, auth=AUTH).predict(app_file(query_path), 2, api_name="/search")
        assert len(gallery) == 2


@pytest.fixture(scope="module")
def app_process(small_index_dir, tmp_path_factory):
    """The real command in a subprocess: ``app_gradio.py --artifacts DIR --port P --share -k 3``.

    Yields ``(url, stderr lines so far, process)`` once it says it is ready.
    """
    port = free_port()
    cmd = [sys.executable, str(REPO / "app_gradio.py"), "--artifacts", str(small_index_dir), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cwd = tmp_path_factory.mktemp("app-cwd")
    proc = subprocess.Popen([*cmd, "--share", "-k", "3"], cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any(ln.startswith("ready in") for ln in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/", lines, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.integration
def test_main_share_offline_fails_soft_and_keeps_serving(app_process, small_index_dir, query_path, tmp_path):
    """--share with no network still serves, says why in one line, and warns about --auth."""
    url, lines, _ = app_process
    out = "".join(lines)
    assert f"loaded {small_index_dir}" in out and "warning: --share without --auth" in out
    if "public link:" not in out:  # no network here: one line says why, and the app keeps serving
        assert len([ln for ln in lines if ln.startswith("no public link:")]) == 1
        assert "Could not create share link" not in out
    gallery, _, _ = client(url, tmp_path).predict(app_file(query_path), 3, api_name="/search")
    assert len(gallery) == 3


# ----------------------------------------------------------------------------- load (issue 7)
def process_usage(pid: int) -> tuple[int, float]:
    """Resident memory (bytes) and CPU time (user + system, seconds) of a process, from /proc."""
    if not Path(f"/proc/{pid}/stat").is_file():
        pytest.skip("needs Linux /proc")
    rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_pages * os.sysconf("SC_PAGE_SIZE"), (int(fields[11]) + int(fields[12])) / ticks


@pytest.mark.slow
def test_concurrent_clients(app_process, searcher, tmp_path):
    """8 gradio_client users x 20 queries each against the app process: no errors, latency, memory flat."""
    url, _, proc = app_process
    n_clients, n_queries, k = 8, 20, 5
    paths = [r.path for r in searcher.index.records()]
    clients = [client(url, tmp_path / f"c{i}") for i in range(n_clients)]

    def user(i: int, rounds: int = n_queries) -> list[float]:
        times = []
        for j in range(rounds):
            path = paths[(i * n_queries + j) % len(paths)]
            t0 = time.perf_counter()
            gallery, results, _ = clients[i].predict(app_file(path), k, api_name="/search")
            times.append(time.perf_counter() - t0)
            assert len(gallery) == k and path.endswith("/" + results["hits"][0]["gallery_path"])  # itself first
        return times

    with ThreadPoolExecutor(n_clients) as pool:
        list(pool.map(lambda i: user(i, 2), range(n_clients)))  # warm up every worker thread once
        rss_before, cpu_before = process_usage(proc.pid)
        t0 = time.perf_counter()
        latencies = [t for times in pool.map(user, range(n_clients)) for t in times]
        wall = time.perf_counter() - t0
    rss_after, cpu_after = process_usage(proc.pid)
    figures = {
        "clients": n_clients,
        "queries": len(latencies),
        "errors": 0,
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(float(np.percentile(latencies, 95)), 3),
        "throughput_qps": round(len(latencies) / wall, 1),
        "server_cpu_ms_per_query": round(1000 * (cpu_after - cpu_before) / len(latencies)),
        "load_average": round(os.getloadavg()[0], 1),
        "server_rss_before_mb": round(rss_before / 2**20),
        "server_rss_after_mb": round(rss_after / 2**20),
        "concurrency_limit": CONCURRENCY_LIMIT,
        "image_size": searcher.info().image_size,
        "cpus": os.cpu_count(),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "app_load_test.json").write_text(json.dumps(figures, indent=2))
    print("\nload test:", figures)
    assert len(latencies) == n_clients * n_queries
    assert rss_after - rss_before < 100 * 2**20, figures
