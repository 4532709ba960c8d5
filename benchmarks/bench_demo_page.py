"""The demo as a visitor meets it, timed in a real browser: upload -> top-5 shown, no click.

Builds a gallery of the product set without ``--queries`` held-out images (one per class, seed 0),
serves it with ``app_gradio.py`` (untrained model, 64 px, ``--weights none``) and, in headless
Chromium, uploads each held-out image and times it until the five result images are decoded. Also
records, per query, whether "No good match" showed and whether the top-5 held an image of the
query's class, and the same for a pure-noise image. With ``--train`` it then clicks "Train a model
on this gallery", waits for the switch, and measures again with the trained model.

    python benchmarks/bench_demo_page.py --out /tmp/demo-bench            # about 2 minutes on 2 cores
    python benchmarks/bench_demo_page.py --out /tmp/demo-bench --train    # + training (a few minutes)

The machine's load average is printed with the figures: on a shared machine they move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
K = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_page(pw, port: int):
    """``(browser, page)``: headless Chromium on the served app at ``port``, desktop-sized, once its search box
    is on the page."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_selector("#search")
    return browser, page


def prepare(out: Path, n_queries: int, seed: int) -> tuple[Path, list[tuple[str, str]]]:
    """A class-per-folder gallery (symlinks) without the held-out queries; returns it and the queries."""
    from simlib.data import find_data_root, load_product_set

    table = load_product_set(find_data_root() / "fashion-product-images-small")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(table.labels, return_counts=True)
    chosen = classes[np.argsort(-counts, kind="stable")][:n_queries]
    held = {int(rng.choice(np.flatnonzero(table.labels == c))) for c in chosen}
    gallery = out / "gallery"
    if not gallery.is_dir():
        for r in range(len(table)):
            if r in held:
                continue
            folder = gallery / str(table.labels[r])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / Path(table.paths[r]).name).symlink_to(table.paths[r])
    return gallery, [(table.paths[r], str(table.labels[r])) for r in sorted(held)]


def measure(page, queries: list[tuple[str, str | None]]) -> list[dict]:
    rows = []
    for path, label in queries:
        before = page.evaluate("[...document.querySelectorAll('#results img')].map(i => i.src).join()")
        t0 = time.perf_counter()
        page.locator("#query input[type=file]").set_input_files(path)
        page.wait_for_function(
            "([before, k]) => { const imgs = [...document.querySelectorAll('#results img')];"
            " return imgs.length === k && imgs.map(i => i.src).join() !== before"
            " && imgs.every(i => i.complete && i.naturalWidth > 0) }",
            arg=[before, K],
        )
        seconds = time.perf_counter() - t0
        page.wait_for_timeout(150)  # the banner and note are set right after the results
        captions = page.locator("#results .caption-label").all_inner_texts()
        rows.append(
            {
                "query": Path(path).name,
                "label": label,
                "seconds": round(seconds, 3),
                "no_good_match": page.locator("#no-match").is_visible(),
                "note": page.locator("#calibration-note").is_visible(),
                "same_class_in_top5": label is not None and any(f" · {label}" in c for c in captions),
                "captions": captions,
            }
        )
    return rows


def summary(rows: list[dict], calibration: dict | None) -> dict:
    product = [r for r in rows if r["label"] is not None]
    times = [r["seconds"] for r in product]
    return {
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
        "no_good_match_with_same_class_in_top5": sum(r["no_good_match"] and r["same_class_in_top5"] for r in product),
        "same_class_in_top5": sum(r["same_class_in_top5"] for r in product),
        "noise_no_good_match": [r["no_good_match"] for r in rows if r["label"] is None],
        "calibration": calibration,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="work folder (gallery symlinks, artifacts, results)")
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", action="store_true", help="then train in the app and measure again")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gallery, queries = prepare(args.out, args.queries, args.seed)
    noise = args.out / "noise.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(1).integers(0, 256, (80, 60, 3), dtype=np.uint8)).save(noise)
    port = free_port()
    artifacts = args.out / "artifacts"
    cmd = [sys.executable, str(REPO / "app_gradio.py"), "--artifacts", str(artifacts), "--data", str(gallery)]
    cmd += ["--weights", "none", "--image-size", "64", "--port", str(port), "-k", str(K)]
    log = open(args.out / "app.log", "w")  # noqa: SIM115 (open for the server's lifetime)
    t_start = time.perf_counter()
    server = subprocess.Popen(cmd, stderr=log, stdout=log, cwd=REPO)
    result: dict = {"command": " ".join(cmd), "load_before": os.getloadavg()}
    try:
        while "ready in" not in (args.out / "app.log").read_text():
            if server.poll() is not None:
                raise SystemExit(f"the app stopped:\n{(args.out / 'app.log').read_text()[-2000:]}")
            time.sleep(0.5)
        result["app_ready_s"] = round(time.perf_counter() - t_start, 1)
        from playwright.sync_api import sync_playwright

        def calibration() -> dict | None:
            return json.loads((artifacts / "index" / "manifest.json").read_text()).get("threshold")

        with sync_playwright() as pw:
            browser, page = open_page(pw, port)
            # one warm-up query (the browser's first upload), not counted
            measure(page, [(str(noise), None)])
            rows = measure(page, [*queries, (str(noise), None)])
            result["untrained"] = {**summary(rows, calibration()), "rows": rows}
            if args.train:
                t0 = time.perf_counter()
                page.click("#train")
                page.wait_for_function(
                    "document.querySelector('#train-status')?.innerText.includes('Trained in')", timeout=900_000
                )
                result["train_s"] = round(time.perf_counter() - t0, 1)
                result["train_message"] = page.locator("#train-status").inner_text()
                rows = measure(page, [*queries, (str(noise), None)])
                result["trained"] = {**summary(rows, calibration()), "rows": rows}
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    result["load_after"] = os.getloadavg()
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    for key in ("untrained", "trained"):
        if key in result:
            print(key, json.dumps({k: v for k, v in result[key].items() if k != "rows"}))
    print("app ready in", result.get("app_ready_s"), "s; train", result.get("train_s"), "s")
    print("load average before", result["load_before"], "after", result["load_after"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
