"""The served app's "no good match", read in a real browser: held-out product photos and the test noise and drawings.

Serves ``app_gradio.py`` on the gallery part of ``bench_verdicts``' split (``prepare``'s folder: 70 % of the
product set's kept classes) with a model trained on that part only, and in headless Chromium uploads a seeded
sample of the held-out product photos, then ``bench_verdicts.test_images`` (the issue's noise and filled shapes
and six other generators; never used to choose or calibrate anything), reading the banner the page shows for
each: whether it is there, and why (unlike the gallery, or no result reaching the calibrated score). A product
photo's top-1 is "right" when the first caption names its class.

    python benchmarks/bench_verdicts.py prepare --out /tmp/verdicts
    python -m simlib train --data /tmp/verdicts/gallery --mode labels --weights none --image-size 64 \\
        --out /tmp/verdicts/model_labels
    python benchmarks/bench_demo_unlike.py --gallery /tmp/verdicts/gallery --model /tmp/verdicts/model_labels \\
        --out /tmp/demo-unlike [--untrained]

``--untrained`` serves the untrained model instead (``--weights none --image-size 64``). The machine's load
average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_demo_page import free_port, open_page  # noqa: E402

K = 5


def queries(out: Path, n_photos: int, n_synthetic: int, seed: int) -> list[dict]:
    """The held-out photos (a seeded sample) and the test images (written as PNG), each ``{path, kind, label}``."""
    from PIL import Image

    from benchmarks.bench_verdicts import bench_split, test_images
    from simlib.data import find_data_root, load_product_set

    table = load_product_set(find_data_root() / "fashion-product-images-small")
    held = bench_split(table, seed)["queries"]
    rows = np.random.default_rng(seed).choice(len(held), size=min(n_photos, len(held)), replace=False)
    out_rows = [{"path": str(held.paths[r]), "kind": "product photo", "label": str(held.labels[r])} for r in rows]
    folder = out / "test_images"
    folder.mkdir(parents=True, exist_ok=True)
    for kind, images in test_images(n_synthetic, seed + 200).items():
        for i, image in enumerate(images):
            path = folder / f"{kind.replace(' ', '_').replace('(', '').replace(')', '')}_{i}.png"
            Image.fromarray(image).save(path)
            out_rows.append({"path": str(path), "kind": kind, "label": None})
    return out_rows


BANNER = (
    "(() => { const el = document.querySelector('#no-match');"
    " return el && el.offsetParent !== null && el.innerText.trim() ? el.innerText : null })()"
)


def settled_banner(page, stable_polls: int = 8, every_ms: int = 150) -> str | None:
    """The banner's text once it has stayed the same for ``stable_polls`` polls (None: no banner shown). The page
    sets it in a second step after the results, so a reading right after them can be the previous query's."""
    last, same = page.evaluate(BANNER), 0
    while same < stable_polls:
        page.wait_for_timeout(every_ms)
        now = page.evaluate(BANNER)
        same = same + 1 if now == last else 0
        last = now
    return last


def upload_all(page, rows: list[dict]) -> list[dict]:
    """Upload each image, wait for its results, read the banner and the first caption."""
    done = []
    for row in rows:
        before = page.evaluate(
            "[[...document.querySelectorAll('#results img')].map(i => i.src).join(),"
            " document.querySelector('#status')?.innerText || '']"
        )
        page.locator("#query input[type=file]").set_input_files(row["path"])
        page.wait_for_function(
            "([before, k]) => { const imgs = [...document.querySelectorAll('#results img')];"
            " const status = document.querySelector('#status')?.innerText || '';"
            " return imgs.length === k && (imgs.map(i => i.src).join() !== before[0] || status !== before[1])"
            " && imgs.every(i => i.complete && i.naturalWidth > 0) }",
            arg=[before, K],
        )
        text = settled_banner(page)
        captions = page.locator("#results .caption-label").all_inner_texts()
        first = captions[0] if captions else ""
        done.append(
            {
                **row,
                "no_good_match": text is not None,
                "banner": text,
                "unlike_gallery": text is not None and "unlike anything in the gallery" in text,
                "right_top1": row["label"] is not None and f" · {row['label']}" in first,
                "first_caption": first,
            }
        )
    return done


def summary(rows: list[dict]) -> dict:
    """The rates: right top-1 photos flagged, every photo flagged, and each test kind flagged (with n)."""
    photos = [r for r in rows if r["kind"] == "product photo"]
    right = [r for r in photos if r["right_top1"]]
    synthetic = [r for r in rows if r["kind"] != "product photo"]
    kinds: dict[str, dict] = {}
    for r in synthetic:
        k = kinds.setdefault(r["kind"], {"n": 0, "no_good_match": 0, "unlike_gallery": 0})
        k["n"] += 1
        k["no_good_match"] += r["no_good_match"]
        k["unlike_gallery"] += r["unlike_gallery"]
    return {
        "photos": len(photos),
        "photos_right_top1": len(right),
        "right_top1_flagged": sum(r["no_good_match"] for r in right),
        "right_top1_flagged_unlike": sum(r["unlike_gallery"] for r in right),
        "photos_flagged": sum(r["no_good_match"] for r in photos),
        "test_images": len(synthetic),
        "test_flagged": sum(r["no_good_match"] for r in synthetic),
        "test_flagged_unlike": sum(r["unlike_gallery"] for r in synthetic),
        "by_kind": kinds,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gallery", type=Path, required=True, help="bench_verdicts' prepared gallery folder")
    p.add_argument("--model", type=Path, help="a model trained on that gallery only")
    p.add_argument("--untrained", action="store_true", help="serve the untrained model instead")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--photos", type=int, default=100, help="held-out product photos (a seeded sample)")
    p.add_argument("--synthetic", type=int, default=10, help="test images of each kind")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not args.untrained and args.model is None:
        p.error("give --model (trained on --gallery) or --untrained")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = queries(args.out, args.photos, args.synthetic, args.seed)
    port = free_port()
    artifacts = args.out / ("artifacts-untrained" if args.untrained else "artifacts")
    cmd = [sys.executable, str(REPO / "app_gradio.py"), "--artifacts", str(artifacts), "--data", str(args.gallery)]
    cmd += ["--weights", "none", "--image-size", "64"] if args.untrained else ["--model", str(args.model)]
    cmd += ["--port", str(port), "-k", str(K)]
    log_path = args.out / "app.log"
    log = open(log_path, "w")  # noqa: SIM115 (open for the server's lifetime)
    t0 = time.perf_counter()
    server = subprocess.Popen(cmd, stderr=log, stdout=log, cwd=REPO)
    result: dict = {"command": " ".join(cmd), "load_before": os.getloadavg()}
    try:
        while "ready in" not in log_path.read_text():
            if server.poll() is not None:
                raise SystemExit(f"the app stopped:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        result["app_ready_s"] = round(time.perf_counter() - t0, 1)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser, page = open_page(pw, port)
            t1 = time.perf_counter()
            done = upload_all(page, rows)
            result["upload_s"] = round(time.perf_counter() - t1, 1)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    manifest = json.loads((artifacts / "index" / "manifest.json").read_text())
    novelty = (manifest.get("verdicts") or {}).get("novelty") or {}
    result.update(
        load_after=os.getloadavg(),
        model="untrained (weights none, 64 px)" if args.untrained else str(args.model),
        novelty={k: novelty.get(k) for k in ("score", "supported", "false_flag_bound", "n_calibration")},
        no_match=(manifest.get("verdicts") or {}).get("no_match"),
        summary=summary(done),
        rows=done,
    )
    (args.out / f"result-{'untrained' if args.untrained else 'trained'}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
