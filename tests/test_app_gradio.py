"""app_gradio.py: the pure functions on a small real index, then the real server through gradio_client."""

from __future__ import annotations

import importlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import ARTIFACTS, REPO

from simlib.errors import SimlibError

sys.path.insert(0, str(REPO))  # app_gradio.py is a top-level script, not part of the package
app = importlib.import_module("app_gradio")

AUTH = ("ana", "s3cret-pass")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def searcher(small_index_dir):
    from simlib.search import Searcher

    return Searcher.load(small_index_dir)


@pytest.fixture(scope="module")
def query_path(searcher) -> str:
    return searcher.index.records()[5].path


@pytest.fixture(scope="module")
def server(searcher, small_index_dir):
    """The real app on 127.0.0.1 with its real launch settings; yields its URL."""
    demo = app.build_demo(searcher, k=4)
    url, _ = app.serve(demo, searcher, port=free_port(), artifacts=small_index_dir, log=lambda m: None)
    yield url
    demo.close()


def client(url: str, tmp_path: Path, auth=None):
    from gradio_client import Client

    return Client(url, auth=auth, download_files=str(tmp_path), verbose=False)


def brute_force(searcher, image, k, filters=None):
    """Ids and scores of the top-k by a plain dot product over every (matching) gallery vector."""
    from simlib.embed import embed_images

    q = embed_images(searcher.model, [image])[0]
    records = searcher.index.records()
    keep = [i for i, r in enumerate(records) if all(r.attributes.get(a) in v for a, v in (filters or {}).items())]
    scores = searcher.index.vectors()[keep] @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [records[keep[i]].id for i in order], scores[order]


# ----------------------------------------------------------------------------- pure functions
def test_filter_fields_and_filters():
    values = {"baseColour": ["Blue", "Red"], "gender": ["Men", "Women"], "label": ["A", "B"], "season": ["S", "W"]}
    assert list(app.filter_fields(values)) == ["baseColour", "gender"]
    assert list(app.filter_fields({"season": ["S", "W"], "label": ["A", "B"]})) == ["label", "season"]
    assert len(app.filter_fields({f"a{i}": ["x", "y"] for i in range(9)})) == app.MAX_FILTERS
    assert app.make_filters(["gender", "baseColour", "label"], [["Men"], [], "any"]) == {"gender": ["Men"]}


def test_search_matches_brute_force(searcher, query_path):
    gallery, results, status = app.search(searcher, query_path, 6)
    ids, scores = brute_force(searcher, query_path, 6)
    assert [h["id"] for h in results["hits"]] == ids
    np.testing.assert_allclose([h["score"] for h in results["hits"]], scores, atol=1e-5)
    hits = searcher.query(query_path, k=6)
    assert gallery == [(h.path, f"#{h.rank} · {h.score:.3f} · {h.label}") for h in hits]
    assert results["hits"][0]["gallery_path"] == hits[0].path and results["hits"][0]["label"] == hits[0].label
    assert status.startswith("gallery: 48 images") and "untrained" in status and "query:" in status


def test_search_filters_inside_the_search(searcher, query_path):
    filters = {"masterCategory": ["Footwear"]}
    n_footwear = sum(r.attributes.get("masterCategory") == "Footwear" for r in searcher.index.records())
    assert 0 < n_footwear < 48
    _, results, _ = app.search(searcher, query_path, 50, filters)
    # All matching images come back (not the matches among an unfiltered top-k), in brute-force order.
    assert [h["id"] for h in results["hits"]] == brute_force(searcher, query_path, 50, filters)[0]
    assert len(results["hits"]) == n_footwear


def test_search_errors_are_simlib_errors(searcher, tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    with pytest.raises(SimlibError, match="no query image"):
        app.search(searcher, None, 5)
    with pytest.raises(SimlibError, match="between 1 and 50"):
        app.search(searcher, str(not_image), 51)
    with pytest.raises(SimlibError) as e:
        app.search(searcher, str(not_image), 5)
    assert app.user_message(e.value, str(not_image)).startswith("notes.jpg: not an image")


def test_uploaded_image_only_from_the_upload_folder(tmp_path):
    upload = tmp_path / "upload" / "abc" / "query.jpg"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"jpeg")
    folder = tmp_path / "upload"
    assert app.uploaded_image(None) is None
    assert app.uploaded_image({"path": str(upload), "orig_name": "query.jpg"}, folder) == str(upload)
    assert app.uploaded_image({"url": "data:image/png;base64,aGk=", "path": None}, folder) == b"hi"
    for payload in ({"path": "/etc/passwd"}, {"path": str(folder / ".." / "x.jpg")}, "/etc/passwd", {"path": None}):
        with pytest.raises(SimlibError, match="must be uploaded"):
            app.uploaded_image(payload, folder)
    with pytest.raises(SimlibError, match="base64"):
        app.uploaded_image({"url": "data:image/png;base64,!!"}, folder)


def test_status_notice_auth_and_share_message(searcher):
    info = searcher.describe()
    assert app.is_untrained(info)
    assert not app.is_untrained({**info, "weights": "imagenet"}) and not app.is_untrained({**info, "trained": True})
    assert "trained" in app.status_text({**info, "trained": True}) and "query" not in app.status_text(info)
    assert app.parse_auth("ana:pa:ss") == ("ana", "pa:ss") and app.parse_auth(None) is None
    for bad in ("ana", ":pw", "ana:"):
        with pytest.raises(SimlibError, match="USER:PASSWORD"):
            app.parse_auth(bad)
    gradio_said = "\nCould not create share link. Missing file: /x/frpc. \n\nPlease check your internet connection."
    assert app.share_failure(gradio_said).endswith("[Missing file: /x/frpc]")


def test_launch_settings_serve_only_the_gallery(searcher, small_index_dir):
    settings = app.launch_settings(searcher, small_index_dir)
    folders = {str(Path(r.path).parent) for r in searcher.index.records()}
    assert set(settings["allowed_paths"]) == folders
    assert settings["blocked_paths"] == [str(Path(small_index_dir).resolve())]
    assert settings["max_file_size"] == app.MAX_UPLOAD and settings["show_error"]


# ----------------------------------------------------------------------------- the real server
def test_api_matches_searcher_query(server, searcher, query_path, tmp_path):
    c = client(server, tmp_path)
    gallery, results, status = c.predict(app_file(query_path), 7, api_name="/search")
    hits = searcher.query(query_path, k=7)
    assert len(gallery) == 7 and all(Path(g["image"]).is_file() for g in gallery)
    assert [g["caption"] for g in gallery] == [app.hit_caption(h) for h in hits]
    assert [(h["id"], h["label"], h["gallery_path"]) for h in results["hits"]] == [
        (h.id, h.label, h.path) for h in hits
    ]
    np.testing.assert_allclose([h["score"] for h in results["hits"]], [h.score for h in hits], atol=1e-5)
    assert "7 results" in status
    # The filters are optional keyword parameters named after the attributes.
    _, results, _ = c.predict(app_file(query_path), 3, baseColour=["Black", "White"], api_name="/search")
    assert results["hits"] and all(h["attributes"]["baseColour"] in ("Black", "White") for h in results["hits"])


def app_file(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def test_bad_uploads_get_one_clear_error(server, tmp_path):
    from gradio_client.exceptions import AppError

    c = client(server, tmp_path)
    text = tmp_path / "holiday.png"
    text.write_text("<html>not an image</html>")
    with pytest.raises(AppError, match=r"^holiday\.png: not an image Pillow can read"):
        c.predict(app_file(text), 3, api_name="/search")


def test_only_gallery_files_are_served(server, searcher, small_index_dir):
    import httpx

    gallery_image = searcher.index.records()[0].path
    base = server.rstrip("/") + "/gradio_api/file="
    assert httpx.get(base + gallery_image).status_code == 200
    for path in ("/etc/passwd", str(small_index_dir / "manifest.json"), str(small_index_dir / "model" / "model.keras")):
        assert httpx.get(base + path).status_code == 403, path
    styles = Path(gallery_image).parents[1] / "styles.csv"  # beside the gallery's folder, not in it
    assert httpx.get(base + str(styles)).status_code == 403


def test_server_files_cannot_be_named_as_queries(server, searcher):
    """A hand-made request naming a server path (Gradio's file marker or not) is refused, not read."""
    import httpx

    gallery_image = searcher.index.records()[0].path
    cases = [
        ({"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "not uploaded by a user"),  # Gradio's check
        ({"path": "/etc/passwd"}, "must be uploaded"),  # ours: Gradio lets a payload without the marker through
        ({"path": gallery_image}, "must be uploaded"),
    ]
    no_filters = [[]] * len(app.filter_fields(searcher.index.attribute_values()))
    for payload, message in cases:
        r = httpx.post(server.rstrip("/") + "/gradio_api/call/search", json={"data": [payload, 3, *no_filters]})
        event = r.json()["event_id"]
        answer = httpx.get(server.rstrip("/") + f"/gradio_api/call/search/{event}", timeout=30).text
        assert "event: error" in answer and message in answer and "hits" not in answer, answer


def test_uploads_over_the_limit_are_refused(server):
    import httpx

    big = b"\x89PNG" + bytes(11 * 1024 * 1024)
    r = httpx.post(server.rstrip("/") + "/gradio_api/upload", files={"files": ("big.png", big, "image/png")})
    assert r.status_code == 413, r.text


def test_auth_refuses_anonymous_requests(searcher, small_index_dir, query_path, tmp_path):
    import httpx

    demo = app.build_demo(searcher)
    url, _ = app.serve(demo, searcher, port=free_port(), auth=AUTH, artifacts=small_index_dir, log=lambda m: None)
    try:
        for path in ("config", "gradio_api/info"):
            assert httpx.get(url + path).status_code == 401, path
        r = httpx.post(url + "gradio_api/call/search", json={"data": [{"path": query_path}, 3]})
        assert r.status_code == 401
        assert httpx.get(url + "gradio_api/file=" + query_path).status_code == 401
        gallery, _, _ = client(url, tmp_path, auth=AUTH).predict(app_file(query_path), 2, api_name="/search")
        assert len(gallery) == 2
    finally:
        demo.close()


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
            assert len(gallery) == k and results["hits"][0]["gallery_path"] == path  # itself first
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
        "concurrency_limit": app.CONCURRENCY_LIMIT,
        "image_size": searcher.describe()["image_size"],
        "cpus": os.cpu_count(),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "app_load_test.json").write_text(json.dumps(figures, indent=2))
    print("\nload test:", figures)
    assert len(latencies) == n_clients * n_queries
    assert rss_after - rss_before < 100 * 2**20, figures
