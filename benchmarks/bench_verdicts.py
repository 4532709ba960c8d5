"""How sure is a match: the "no good match" cut, the match probability and the "copies" cut, on held-out photos.

The product set is split once (seed 0): 5 classes (of those with at least 20 images) are left out of the
gallery entirely; the other classes are split class-stratified, 70 % gallery and 30 % held-out queries.
Everything is calibrated on the gallery only (its image-disjoint validation split, as
``simlib calibrate`` draws it) and judged on the held-out queries, on the left-out classes, on synthetic
noise images and on drawn shapes; for copies, on planted near-copies of gallery images. The "unlike the
gallery" check (``simlib.search.novelty``) is calibrated on the gallery's images only, its method chosen on
development images (``dev_images``) and judged on test images of other generators and seeds (``test_images``),
combined with the "no good match" score cut as the app combines them (``unlike_gallery_figures``).

    python benchmarks/bench_verdicts.py prepare --out /tmp/verdicts     # the gallery folder to train on
    python -m simlib train --data /tmp/verdicts/gallery --mode labels --weights none --image-size 64 \
        --out /tmp/verdicts/model_labels
    python benchmarks/bench_verdicts.py run --out /tmp/verdicts [--model /tmp/verdicts/model_labels]
"""

from __future__ import annotations

import csv
import itertools
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LEFT_OUT_CLASSES = 5
QUERY_SHARE = 0.3


def bench_split(table, seed: int = 0) -> dict:
    """``{"gallery", "queries", "left_out"}``: the gallery (70 % of the kept classes, class-stratified),
    held-out queries of those classes (30 %) and every image of the left-out classes."""
    from simlib.data import split_table

    rng = np.random.default_rng(seed)
    labels = table.labels.astype(str)
    classes, counts = np.unique(labels, return_counts=True)
    left_out = sorted(rng.choice(classes[counts >= 20], LEFT_OUT_CLASSES, replace=False).tolist())
    out_rows = np.flatnonzero(np.isin(labels, left_out))
    kept = table.subset(np.flatnonzero(~np.isin(labels, left_out)))
    parts = split_table(kept, seed=seed, val=0.0, test=QUERY_SHARE, by="image")
    return {
        "gallery": parts["train"],
        "queries": parts["test"],
        "left_out": table.subset(out_rows),
        "classes": left_out,
    }


def write_product_folder(table, folder: Path, source_root: Path) -> None:
    """A product-layout folder (``styles.csv`` + ``images/`` of symlinks) holding ``table``'s rows."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(source_root / "styles.csv", newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = {r[0]: r for r in reader if r}
    keep = {str(int(i)) for i in table.ids}
    with open(folder / "styles.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for key in sorted(keep, key=int):
            w.writerow(rows[key])
            link = folder / "images" / f"{key}.jpg"
            if not link.exists():
                os.symlink(source_root / "images" / f"{key}.jpg", link)


# ----------------------------------------------------------------------------- synthetic queries
def noise_images(n: int, seed: int) -> list:
    """``n`` images of uniform RGB noise, 60x80 like the product photos."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (80, 60, 3), dtype=np.uint8) for _ in range(n)]


def drawn_shapes(n: int, seed: int) -> list:
    """``n`` drawings: a filled circle, rectangle or triangle of a random colour on white, 60x80."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = Image.new("RGB", (60, 80), "white")
        d = ImageDraw.Draw(img)
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        x0, y0 = int(rng.integers(5, 20)), int(rng.integers(5, 25))
        x1, y1 = int(rng.integers(40, 56)), int(rng.integers(50, 76))
        shape = i % 3
        if shape == 0:
            d.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            d.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            d.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour)
        out.append(np.asarray(img))
    return out


# ----------------------------------------------------------------------------- synthetic images far from the gallery
# Two disjoint sets: DEVELOPMENT images (choose the method, never the final figures) and TEST images (other
# generators and other seeds; only for the final figures). Neither calibrates anything: the check is
# calibrated on the gallery only.
_SIZES = ((60, 80), (80, 60), (224, 224), (300, 200))
_WORDS = ("hello", "SALE", "42", "lorem ipsum", "abc", "Monday", "x+y", "OK")


def _canvas(rng, background: str):
    from PIL import Image

    w, h = _SIZES[int(rng.integers(len(_SIZES)))]
    if background == "white":
        return Image.new("RGB", (w, h), "white")
    return Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))


def _colour(rng) -> tuple:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def dev_images(n: int, seed: int) -> dict[str, list]:
    """Development images, ``n`` of each kind: uniform and Gaussian noise, plain and graded colour fields,
    lines, circles and text drawn on white and on a colour."""
    from PIL import ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    sizes = [_SIZES[int(i)] for i in rng.integers(0, len(_SIZES), n)]
    out["uniform noise"] = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]
    out["gaussian noise"] = [
        np.clip(rng.normal(rng.uniform(60, 200), rng.uniform(20, 80), (h, w, 3)), 0, 255).astype(np.uint8)
        for w, h in sizes
    ]
    out["colour field"] = [np.full((h, w, 3), _colour(rng), np.uint8) for w, h in sizes]
    fields = []
    for w, h in sizes:
        a, b = np.asarray(_colour(rng), np.float32), np.asarray(_colour(rng), np.float32)
        t = np.linspace(0, 1, h)[:, None, None]
        fields.append(np.broadcast_to(a + (b - a) * t, (h, w, 3)).astype(np.uint8))
    out["graded field"] = fields
    for background in ("white", "colour"):
        for kind in ("lines", "circles", "text"):
            images = []
            for _ in range(n):
                img = _canvas(rng, background)
                d = ImageDraw.Draw(img)
                w, h = img.size
                for _ in range(int(rng.integers(1, 5))):
                    x = sorted(rng.integers(0, w, 2).tolist())
                    y = sorted(rng.integers(0, h, 2).tolist())
                    width = int(rng.integers(1, max(2, w // 15)))
                    if kind == "lines":
                        d.line((x[0], y[0], x[1], y[1]), fill=_colour(rng), width=width)
                    elif kind == "circles":
                        d.ellipse((x[0], y[0], x[1] + 2, y[1] + 2), outline=_colour(rng), width=width)
                    else:
                        font = ImageFont.load_default(size=int(rng.integers(10, max(11, h // 4))))
                        word = _WORDS[int(rng.integers(len(_WORDS)))]
                        d.text((x[0], y[0]), word, fill=_colour(rng), font=font)
                images.append(np.asarray(img))
            out[f"{kind} on {background}"] = images
    return out


def test_images(n: int, seed: int) -> dict[str, list]:
    """Test images, ``n`` of each kind, from other generators than :func:`dev_images`: the issue's noise and
    filled shapes (:func:`noise_images`, :func:`drawn_shapes`), smooth (blurred) noise, salt and pepper,
    stripes and checkerboards, polygon outlines on a colour, scribbles and words on a graded field."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(seed)
    out: dict[str, list] = {
        "noise (issue)": noise_images(n, seed + 1),
        "filled shapes on white (issue)": drawn_shapes(n, seed + 2),
    }
    sizes = [_SIZES[int(i)] for i in rng.integers(0, len(_SIZES), n)]
    out["smooth noise"] = [
        np.asarray(
            Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8))
            .resize((w, h), Image.Resampling.BICUBIC)
            .filter(ImageFilter.GaussianBlur(2))
        )
        for w, h in sizes
    ]
    salt = []
    for w, h in sizes:
        a = np.full((h, w, 3), int(rng.integers(60, 200)), np.uint8)
        m = rng.random((h, w))
        a[m < 0.1], a[m > 0.9] = 0, 255
        salt.append(a)
    out["salt and pepper"] = salt
    patterns = []
    for i, (w, h) in enumerate(sizes):
        step = int(rng.integers(4, 20))
        yy, xx = np.mgrid[0:h, 0:w]
        on = ((xx // step + yy // step) % 2 == 0) if i % 2 else ((xx // step) % 2 == 0)
        a = np.where(on[..., None], np.asarray(_colour(rng), np.uint8), np.asarray(_colour(rng), np.uint8))
        patterns.append(a.astype(np.uint8))
    out["stripes and checks"] = patterns
    drawn = {"polygons on colour": [], "scribbles on white": [], "words on graded field": []}
    for _ in range(n):
        img = _canvas(rng, "colour")
        d = ImageDraw.Draw(img)
        w, h = img.size
        for _ in range(int(rng.integers(1, 4))):
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(int(rng.integers(3, 7)))]
            d.polygon(pts, outline=_colour(rng), width=int(rng.integers(1, 4)))
        drawn["polygons on colour"].append(np.asarray(img))
        img = _canvas(rng, "white")
        d = ImageDraw.Draw(img)
        w, h = img.size
        pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(int(rng.integers(5, 15)))]
        d.line(pts, fill=_colour(rng), width=int(rng.integers(1, 6)), joint="curve")
        drawn["scribbles on white"].append(np.asarray(img))
        w, h = _SIZES[int(rng.integers(len(_SIZES)))]
        a, b = np.asarray(_colour(rng), np.float32), np.asarray(_colour(rng), np.float32)
        t = np.linspace(0, 1, w)[None, :, None]
        img = Image.fromarray(np.broadcast_to(a + (b - a) * t, (h, w, 3)).astype(np.uint8))
        d = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=int(rng.integers(12, max(13, h // 3))))
        d.text(
            (int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))),
            _WORDS[int(rng.integers(len(_WORDS)))],
            fill=_colour(rng),
            font=font,
        )
        drawn["words on graded field"].append(np.asarray(img))
    out.update(drawn)
    return out


# ----------------------------------------------------------------------------- measuring
def _topk(vectors: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by brute force (the reference, no index)."""
    sims = vectors @ gallery.T
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, idx, axis=1), idx


def copy_pairs(vectors: np.ndarray, thumbs: np.ndarray, cut, chunk: int = 512) -> np.ndarray:
    """Every pair (i < j) the copy verdict merges, by brute force over all pairs: (n_pairs, 2)."""
    out = []
    v = vectors.astype(np.float32)
    for a in range(0, len(v), chunk):
        sims = v[a : a + chunk] @ v.T
        i, j = np.nonzero(sims >= cut.score)
        i = i + a
        keep = i < j
        i, j = i[keep], j[keep]
        if cut.needs_thumbnails and len(i):
            keep = np.sum(thumbs[i] * thumbs[j], axis=1) >= cut.thumb_min
            i, j = i[keep], j[keep]
        out.append(np.stack([i, j], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def reliability(p: np.ndarray, y: np.ndarray, edges=(0, 0.2, 0.4, 0.6, 0.8, 1.0001)) -> tuple[list, float]:
    """Predicted vs observed per probability bin, and the expected calibration error."""
    rows, ece = [], 0.0
    for a, b in itertools.pairwise(edges):
        m = (p >= a) & (p < b)
        if m.any():
            rows.append(
                {
                    "bin": f"{a:.1f}-{min(b, 1):.1f}",
                    "n": int(m.sum()),
                    "predicted": float(p[m].mean()),
                    "observed": float(y[m].mean()),
                }
            )
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return rows, float(ece)


def measure(name: str, embedder, split: dict, seed: int, n_synthetic: int, n_planted: int) -> dict:
    """Every figure for one model."""
    import time

    from simlib.search import Searcher
    from simlib.search.calibrate import validation_results
    from simlib.search.confidence import confidence_label, no_match_cut
    from simlib.search.copies import SAME_PICTURE, calibrate_copies, near_copy, thumbnail
    from simlib.search.probability import fit_match_curve, match_probability

    t0 = time.perf_counter()
    gallery = split["gallery"]
    searcher, _ = Searcher.from_table(embedder, gallery, progress=False)
    g_vec = searcher.index.vectors_of([int(i) for i in searcher.index.ids])
    g_labels = np.asarray([r.label for r in searcher.index.records()], dtype=object)
    # calibration: the gallery's own validation split only
    v_scores, v_same = validation_results(searcher, gallery, k=5, val=0.2, seed=seed)
    cut = no_match_cut(v_scores[:, 0], v_same[:, 0], seed=seed, val=0.2)
    curve = fit_match_curve(v_scores, v_same, seed=seed)
    copy = calibrate_copies(searcher, n_copies=200, seed=seed)
    t_cal = time.perf_counter() - t0
    # which query statistic separates best on validation (the cut is on the top-1 score)
    statistics = {
        "top-1": v_scores[:, 0],
        "mean of top-5": v_scores.mean(axis=1),
        "5th score": v_scores[:, 4],
        "top-1 plus its gap to the 5th": 2 * v_scores[:, 0] - v_scores[:, 4],
    }
    validation_true_flag = {k: round(no_match_cut(x, v_same[:, 0]).true_flag_rate, 3) for k, x in statistics.items()}
    # held-out queries: images the calibration never saw
    q_vec = embedder.embed_table(split["queries"]).embeddings
    o_vec = embedder.embed_table(split["left_out"]).embeddings
    n_vec = embedder.embed_images(noise_images(n_synthetic, seed + 1))
    d_vec = embedder.embed_images(drawn_shapes(n_synthetic, seed + 2))
    q_scores, q_idx = _topk(q_vec, g_vec, 5)
    q_same = g_labels[q_idx] == split["queries"].labels[:, None]
    right = q_same[:, 0]
    flagged = q_scores[:, 0] < cut.score
    res = {
        "model": name,
        "calibration_seconds": round(t_cal, 1),
        "no_match": cut.to_dict(),
        "curve": curve.to_dict(),
        "copies": copy.to_dict(),
        "validation_true_flag_by_statistic": validation_true_flag,
    }
    res["held_out"] = {
        "n_queries": len(right),
        "top1_right": float(right.mean()),
        "false_flag_rate": float(flagged[right].mean()),
        "true_flag_rate": float(flagged[~right].mean()),
        "precision_pass": float(right[~flagged].mean()) if (~flagged).any() else None,
        "left_out_flagged": float(np.mean(_topk(o_vec, g_vec, 1)[0][:, 0] < cut.score)),
        "noise_flagged": float(np.mean(_topk(n_vec, g_vec, 1)[0][:, 0] < cut.score)),
        "shapes_flagged": float(np.mean(_topk(d_vec, g_vec, 1)[0][:, 0] < cut.score)),
        "noise_top1": [float(x) for x in np.percentile(_topk(n_vec, g_vec, 1)[0][:, 0], [0, 50, 100])],
        "shapes_top1": [float(x) for x in np.percentile(_topk(d_vec, g_vec, 1)[0][:, 0], [0, 50, 100])],
        "right_top1": [float(x) for x in np.percentile(q_scores[right, 0], [0, 10, 50, 100])],
    }
    res["unlike_gallery"] = unlike_gallery_figures(embedder, split, g_vec, cut, q_scores[:, 0], right, seed)
    # reliability of the probability on the held-out queries' top-5 (in-gallery classes, then + left-out)
    ranks = np.broadcast_to(np.arange(1, 6), q_scores.shape)
    p = match_probability(q_scores, curve, ranks)
    rel, ece = reliability(p.ravel(), q_same.ravel())
    o_scores = _topk(o_vec, g_vec, 5)[0]
    p_all = np.concatenate([p.ravel(), match_probability(o_scores, curve, ranks[: len(o_scores)]).ravel()])
    y_all = np.concatenate([q_same.ravel(), np.zeros(o_scores.size, bool)])
    rel_all, ece_all = reliability(p_all, y_all)
    words = {}
    for lab in ("high confidence", "medium confidence", "low confidence"):
        m = np.asarray([confidence_label(x) == lab for x in p.ravel()])
        words[lab] = {"share": float(m.mean()), "observed": float(q_same.ravel()[m].mean()) if m.any() else None}
    res["probability"] = {
        "reliability": rel,
        "ece": ece,
        "reliability_with_left_out": rel_all,
        "ece_with_left_out": ece_all,
        "labels": words,
        "top1_range": [float(q_scores[:, 0].min()), float(q_scores[:, 0].max())],
    }
    # copies: every product image (gallery, held-out, left-out) plus planted near-copies of held-out images
    all_vec = np.concatenate([g_vec, q_vec, o_vec])
    all_paths = (
        [r.path for r in searcher.index.records()] + list(split["queries"].paths) + list(split["left_out"].paths)
    )
    all_labels = np.concatenate([g_labels, split["queries"].labels, split["left_out"].labels]).astype(str)
    rng = np.random.default_rng(seed + 3)
    planted_of = rng.choice(len(split["queries"]), size=n_planted, replace=False)
    # the first half re-encoded and resized only, the second half also cropped by up to 1 % a side
    half = n_planted // 2
    planted_imgs = [
        near_copy(split["queries"].paths[i], seed + 10_000 + int(i), crop=0.0 if n < half else 0.01)
        for n, i in enumerate(planted_of)
    ]
    p_vec = embedder.embed_images(planted_imgs)
    thumbs = np.stack([thumbnail(p) for p in all_paths] + [thumbnail(im) for im in planted_imgs])
    vec = np.concatenate([all_vec, p_vec])
    labels = np.concatenate([all_labels, all_labels[len(g_vec) + planted_of]])
    names = [Path(str(p)).name for p in all_paths] + [
        f"copy of {Path(split['queries'].paths[i]).name}" for i in planted_of
    ]
    truth_list = [(len(g_vec) + int(i), len(all_vec) + n) for n, i in enumerate(planted_of)]
    truth = set(truth_list)
    out = {}
    for rule, c in (("calibrated", copy), ("fixed", _fixed_cut(name))):
        pset = {(int(a), int(b)) for a, b in copy_pairs(vec, thumbs, c)}
        found = len(truth & pset)
        mixed = [(a, b) for a, b in sorted(pset) if labels[a] != labels[b]]
        same_picture = [(a, b) for a, b in mixed if float(thumbs[a] @ thumbs[b]) >= SAME_PICTURE]
        out[rule] = {
            "cut": c.score,
            "thumb_min": c.thumb_min,
            "pairs_merged": len(pset),
            "mixed_label_pairs": len(mixed),
            "mixed_label_same_picture": len(same_picture),
            "mixed_examples": [
                (
                    str(labels[a]),
                    names[a],
                    str(labels[b]),
                    names[b],
                    round(float(vec[a] @ vec[b]), 6),
                    round(float(thumbs[a] @ thumbs[b]), 5),
                )
                for a, b in mixed[:5]
            ],
            "planted_recall": found / len(truth),
            "planted_recall_uncropped": len(set(truth_list[:half]) & pset) / half,
            "planted_recall_cropped": len(set(truth_list[half:]) & pset) / (len(truth_list) - half),
            "planted_precision": found / len(pset) if pset else None,
            "same_label_unplanted_pairs": len(pset) - found - len(mixed),
        }
    # per-query collapse groups, as a result list shows them (top 20 of each held-out query, merged)
    from simlib.search.copies import copy_groups

    mixed_groups = groups = 0
    _, top = _topk(q_vec, g_vec, 20)
    for row in top:
        for g in copy_groups(list(row), g_vec, copy, thumbs[: len(g_vec)]):
            if len(g) > 1:
                groups += 1
                mixed_groups += len({g_labels[row[i]] for i in g}) > 1
    out["query_groups"] = {"groups_with_copies": groups, "mixed_label_groups": mixed_groups, "queries": len(top)}
    res["copies_test"] = out
    res["n_images_copies_test"] = len(vec)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def _knn_novelty(vectors: np.ndarray, reference: np.ndarray, k: int = 5) -> np.ndarray:
    """1 - the mean cosine of each vector's ``k`` nearest reference vectors (the embedding-space candidate)."""
    sims = vectors @ reference.T
    return 1 - -np.sort(-sims, axis=1)[:, :k].mean(axis=1)


def unlike_gallery_figures(embedder, split: dict, g_vec: np.ndarray, cut, q_top1, right, seed: int) -> dict:
    """The "unlike the gallery" check: the method chosen on the gallery's validation split and the development
    images, then the final figures on the held-out queries and the test images, each with the "no good match"
    cut (when supported) as the app combines them."""
    from simlib.search.novelty import DEFAULT_MAX_FALSE_FLAG, calibrate_novelty, conformal_cut, image_statistics

    alpha = DEFAULT_MAX_FALSE_FLAG
    novelty = calibrate_novelty(list(split["gallery"].paths), seed=seed)  # the gallery only
    # candidates on development images: kNN in the model's embedding (split-conformal on 20 % of the gallery
    # against the rest) and the pixel statistics (as calibrated)
    order = np.random.default_rng(seed).permutation(len(g_vec))
    n_cal = len(g_vec) // 5
    ref = g_vec[order[n_cal:]]
    knn_cut = conformal_cut(_knn_novelty(g_vec[order[:n_cal]], ref), alpha)
    dev = dev_images(20, seed + 100)
    test = test_images(30, seed + 200)

    def flags(images: list) -> dict[str, np.ndarray]:
        vec = embedder.embed_images(images)
        top1 = (vec @ g_vec.T).max(axis=1)
        stats = np.stack([image_statistics(im) for im in images])
        score_flag = top1 < cut.score if cut.supported else np.zeros(len(images), bool)
        pixel = novelty.flags_statistics(stats)
        return {"score": score_flag, "knn": _knn_novelty(vec, ref) > knn_cut, "pixels": pixel}

    dev_rows = {}
    for kind, images in dev.items():
        f = flags(images)
        dev_rows[kind] = {
            "n": len(images),
            "score cut": float(f["score"].mean()),
            "embedding kNN": float(f["knn"].mean()),
            "pixel statistics": float(f["pixels"].mean()),
            "score cut or pixels": float((f["score"] | f["pixels"]).mean()),
            "score cut or kNN": float((f["score"] | f["knn"]).mean()),
        }
    val_order = order[:n_cal]
    val_paths = [split["gallery"].paths[i] for i in val_order[:300]]
    q_stats = np.stack([image_statistics(p) for p in split["queries"].paths])
    q_pixel = novelty.flags_statistics(q_stats)
    q_score = q_top1 < cut.score if cut.supported else np.zeros(len(q_top1), bool)
    test_rows = {}
    for kind, images in test.items():
        f = flags(images)
        combined = f["score"] | f["pixels"]
        test_rows[kind] = {"n": len(images), "pixels": float(f["pixels"].mean()), "combined": float(combined.mean())}
    n_test = sum(r["n"] for r in test_rows.values())
    return {
        "check": novelty.to_dict() | {"precision": "(omitted)", "mean": "(omitted)", "scale": "(omitted)"},
        "summary": novelty.summary(),
        "validation_knn_flagged": float(np.mean(_knn_novelty(g_vec[val_order], ref) > knn_cut)),
        "validation_pixel_images": len(val_paths),
        "dev": dev_rows,
        "held_out_pixel_flagged": float(q_pixel.mean()),
        "held_out_right_flagged_combined": float((q_score | q_pixel)[right].mean()),
        "held_out_right_flagged_score_only": float(q_score[right].mean()),
        "held_out_all_flagged_combined": float((q_score | q_pixel).mean()),
        "test": test_rows,
        "test_all_combined": sum(r["combined"] * r["n"] for r in test_rows.values()) / n_test,
        "test_n": n_test,
    }


def gallery_acceptance(embedder, table, seed: int) -> dict:
    """Issue 22's acceptance: the copy cut calibrated on the whole product gallery, then every pair of that
    gallery it calls copies, by brute force: how many mix labels (and how many of those are the same picture)."""
    from simlib.search import Searcher
    from simlib.search.copies import SAME_PICTURE, calibrate_copies, thumbnail

    searcher, _ = Searcher.from_table(embedder, table, progress=False)
    cut = calibrate_copies(searcher, n_copies=200, seed=seed)
    records = searcher.index.records()
    vec = searcher.index.vectors_of([r.id for r in records])
    thumbs = np.stack([thumbnail(r.path) for r in records])
    labels = np.asarray([r.label for r in records], dtype=object)
    pairs = copy_pairs(vec, thumbs, cut)
    mixed = [(int(a), int(b)) for a, b in pairs if labels[a] != labels[b]]
    same_picture = [(a, b) for a, b in mixed if float(thumbs[a] @ thumbs[b]) >= SAME_PICTURE]
    return {
        "n_images": len(records),
        "copies": cut.to_dict(),
        "pairs_merged": len(pairs),
        "mixed_label_pairs": len(mixed),
        "mixed_label_same_picture": len(same_picture),
        "mixed_examples": [
            (labels[a], Path(records[a].path).name, labels[b], Path(records[b].path).name) for a, b in mixed[:5]
        ],
    }


def _fixed_cut(name: str):
    """The app's fixed rule before this work: cosine 0.9998 for an untrained model, 0.97 otherwise."""
    from simlib.search.copies import CopyCut

    s = 0.9998 if name.startswith("untrained") else 0.97
    return CopyCut(s, None, 0.0, s, 0.0, 0.0, 0.0, True, 0, 0, 0)


def main() -> int:
    import argparse
    import json
    import time

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from benchmarks.common import machine
    from simlib.data import load_product_set
    from simlib.model import Embedder, open_embedder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["prepare", "run"])
    ap.add_argument("--data", default=os.environ.get("SIMLIB_DATA", "../shared/data") + "/fashion-product-images-small")
    ap.add_argument("--out", default="/tmp/verdicts")
    ap.add_argument("--model", default=None, help="a model trained on the gallery part (prepare's folder) only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", type=int, default=30, help="noise images and drawn shapes, each")
    ap.add_argument("--planted", type=int, default=200, help="planted near-copies of held-out photos")
    args = ap.parse_args()
    root, out = Path(args.data), Path(args.out)
    table = load_product_set(root)
    split = bench_split(table, args.seed)
    if args.what == "prepare":
        write_product_folder(split["gallery"], out / "gallery", root)
        print(
            f"gallery: {len(split['gallery'])} images in {out / 'gallery'}; held-out queries "
            f"{len(split['queries'])}; left-out classes {split['classes']} ({len(split['left_out'])} images)"
        )
        return 0
    before = machine()
    t0 = time.time()
    models = {"untrained (weights none, 64 px)": open_embedder(image_size=64, weights="none")}
    if args.model:
        models[f"trained ({Path(args.model).name})"] = Embedder.load(args.model)
    results = [measure(n, e, split, args.seed, args.synthetic, args.planted) for n, e in models.items()]
    acceptance = gallery_acceptance(models["untrained (weights none, 64 px)"], table, args.seed)
    report = {
        "machine_before": before,
        "load_after": list(os.getloadavg()),
        "seconds": round(time.time() - t0, 1),
        "split": {k: len(v) for k, v in split.items() if k != "classes"},
        "left_out_classes": split["classes"],
        "results": results,
        "acceptance_untrained_full_gallery": acceptance,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_verdicts.json").write_text(json.dumps(report, indent=2))
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    m = report["machine_before"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores; load average before {m['load_average']}, after "
        f"{[round(x, 2) for x in report['load_after']]}; {report['seconds']} s"
    )
    print(f"split: {report['split']}; left-out classes: {', '.join(report['left_out_classes'])}")
    for r in report["results"]:
        c, h, pr, ct = r["no_match"], r["held_out"], r["probability"], r["copies_test"]
        print(f"\n== {r['model']}")
        print(
            f"no-match cut {c['score']:.5f} (validation: {c['n_queries']} queries, false-flag "
            f"{c['false_flag_rate']:.3f}, true-flag {c['true_flag_rate']:.3f}, precision of what passes "
            f"{c['precision_pass']}, supported {c['supported']})"
        )
        print(
            f"held-out ({h['n_queries']} queries, top-1 right {h['top1_right']:.3f}): right flagged "
            f"{h['false_flag_rate']:.3f}, wrong flagged {h['true_flag_rate']:.3f}, precision of what passes "
            f"{h['precision_pass']:.3f}; left-out classes flagged {h['left_out_flagged']:.3f}; noise "
            f"{h['noise_flagged']:.2f} (top-1 {h['noise_top1']}); drawn shapes {h['shapes_flagged']:.2f} (top-1 "
            f"{h['shapes_top1']}); right top-1 scores min/p10/median/max {[round(x, 5) for x in h['right_top1']]}"
        )
        print(f"validation true-flag rate at 10 % false flags, by statistic: {r['validation_true_flag_by_statistic']}")
        print_unlike(r["unlike_gallery"])
        cv = r["curve"]
        print(
            f"probability curve: kind {cv['kind']} (CV Brier score {cv['brier_score']:.4f}, rank "
            f"{cv['brier_rank']:.4f}, base {cv['brier_base']:.4f}); knots {cv['knots']}"
        )
        print(
            f"reliability on held-out top-5 (ECE {pr['ece']:.3f}; with left-out classes {pr['ece_with_left_out']:.3f}):"
        )
        for row in pr["reliability"]:
            print(f"  p {row['bin']}: n {row['n']}, predicted {row['predicted']:.3f}, observed {row['observed']:.3f}")
        for lab, v in pr["labels"].items():
            print(f"  {lab}: {v['share']:.3f} of results, observed same kind {v['observed']}")
        cc = r["copies"]
        print(
            f"copy cut: cosine >= {cc['score']}, thumbnail correlation >= {cc['thumb_min']} (distinct by "
            f"{cc['distinct_by']}: p{cc['distinct_percentile']} {cc['distinct_cut']}; cosine-only recall "
            f"{cc['cosine_recall']:.3f}, calibration recall {cc['copy_recall']:.3f}, leak {cc['distinct_leak']:.4f}, "
            f"separable {cc['separable']}, same-picture pairs set aside {cc['same_picture']})"
        )
        for rule in ("calibrated", "fixed"):
            t = ct[rule]
            print(
                f"  {rule} rule on {r['n_images_copies_test']} images: {t['pairs_merged']} pairs merged, "
                f"{t['mixed_label_pairs']} mixing labels ({t['mixed_label_same_picture']} of them the same picture), "
                f"planted recall {t['planted_recall']:.3f} (uncropped {t['planted_recall_uncropped']:.3f}, cropped "
                f"{t['planted_recall_cropped']:.3f}), precision {t['planted_precision']}, same-label "
                f"unplanted {t['same_label_unplanted_pairs']}; e.g. {t['mixed_examples'][:2]}"
            )
        print(f"  held-out queries' top-20 collapsed: {ct['query_groups']}")
    a = report.get("acceptance_untrained_full_gallery")
    if a:
        c = a["copies"]
        print(
            f"\n== acceptance: untrained model, copy cut calibrated on the whole product gallery ({a['n_images']} "
            f"images): cosine >= {c['score']}, thumbnail >= {c['thumb_min']}, calibration recall "
            f"{c['copy_recall']:.3f};"
            f" {a['pairs_merged']} pairs called copies, {a['mixed_label_pairs']} mixing labels "
            f"({a['mixed_label_same_picture']} of them the same picture): {a['mixed_examples']}"
        )


def print_unlike(u: dict) -> None:
    """The "unlike the gallery" lines of one model."""
    print(f"unlike the gallery: {u['summary']}")
    print("  development images (choosing the method), share flagged:")
    for kind, row in u["dev"].items():
        print(f"    {kind:22s} " + ", ".join(f"{k} {v:.2f}" if k != "n" else f"n {v}" for k, v in row.items()))
    print(
        f"  held-out queries: pixel check flags {u['held_out_pixel_flagged']:.3f}; right top-1 flagged by the score "
        f"cut {u['held_out_right_flagged_score_only']:.3f}, by either {u['held_out_right_flagged_combined']:.3f}; "
        f"all queries by either {u['held_out_all_flagged_combined']:.3f}"
    )
    print(
        f"  test images (n {u['test_n']}), share with 'no good match' (score cut or pixel check): "
        f"{u['test_all_combined']:.3f}"
    )
    for kind, row in u["test"].items():
        print(f"    {kind:32s} n {row['n']}: pixel check {row['pixels']:.2f}, combined {row['combined']:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
