"""What the app answers, as values, and how each is worded for the page and the API: a search's results,
an explanation, an added image, a training run; the status line, the calibration note, the banner, the
feedback lines, the filters offered and the duplicate cut for a model. No Gradio, no TensorFlow."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from simlib.search.copies import CopyCut

# Filters shown for the product set; other galleries get their first attributes (and labels).
PREFERRED_FILTERS = ("masterCategory", "subCategory", "baseColour", "gender")


MAX_FILTERS = 4


# Duplicate collapse (see collapse_threshold): the library's default for a model that tells items apart...
COLLAPSE_AT = 0.97


# ...and the floor for an untrained backbone, which puts every pair of product photos above 0.93 cosine
# (nearest distinct neighbours: median 0.998, 99th percentile 0.9998) and JPEG re-encoded copies at
# 0.9998-0.99999 (measured at 64 px on the product set).
UNTRAINED_COLLAPSE_AT = 0.9998


VERDICT_LABELS = {"similar": "similar", "not_similar": "not similar"}


# Where a visitor's verdicts go and what uses them, said on the page under the feedback buttons.
FEEDBACK_WHERE = (
    "Verdicts are kept on this server (the app's `feedback/` folder), one per result of a query, the latest "
    "counting; training on this gallery (here or with `simlib train --feedback`) learns from them."
)


def filter_fields(
    attribute_values: Mapping[str, Sequence[str]],
    preferred: Sequence[str] = PREFERRED_FILTERS,
    max_fields: int = MAX_FILTERS,
) -> dict[str, list[str]]:
    """The attributes to offer as filters, with their values.

    Args:
        attribute_values: attribute -> distinct values, as from ``IndexBackend.attribute_values()``.
        preferred: attributes to show when present, in this order.
        max_fields: at most this many filters.

    Returns:
        The preferred attributes present, else the first ``max_fields`` attributes (labels included).
    """
    chosen = [a for a in preferred if a in attribute_values]
    if not chosen:
        chosen = sorted(attribute_values, key=lambda a: (a != "label", a))
    return {a: list(attribute_values[a]) for a in chosen[:max_fields]}


def is_untrained(info: Mapping[str, Any]) -> bool:
    """True when the model has neither pretrained backbone weights nor simlib training (``info``: a
    ``Searcher.info().to_dict()``)."""
    return info.get("weights") == "none" and not info.get("trained")


def collapse_threshold(info: Mapping[str, Any]) -> float:
    """The cosine above which the app merges a result into a better-ranked one, for this model.

    A copy must be far more alike than a merely good match, so the threshold is at least halfway
    from the calibrated "good match" score to 1 (with the untrained model's calibrated 0.9997 on
    the product set: 0.99987, above its closest distinct photos, under most re-encoded copies).
    Without a calibration: :data:`COLLAPSE_AT`, or :data:`UNTRAINED_COLLAPSE_AT` for an untrained
    backbone, whose scores are all crowded just under 1.

    Args:
        info: ``Searcher.info().to_dict()`` (``weights``, ``trained``, ``threshold``).
    """
    floor = UNTRAINED_COLLAPSE_AT if is_untrained(info) else COLLAPSE_AT
    calibrated = info.get("threshold")
    return floor if calibrated is None else max(floor, (1.0 + float(calibrated)) / 2)


def status_text(
    info: Mapping[str, Any],
    seconds: float | None = None,
    n_hits: int | None = None,
    merged: int | None = None,
    filters: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The status line: gallery size, model, backbone weights, which model this is and why (``info``'s
    ``model_source``, when known) and (after a query) the query time, the number of results, of
    near-duplicates merged, and the filters that were on."""
    weights = info.get("weights")
    weights = Path(weights).name if weights not in ("imagenet", "none", None) else weights
    model = "trained" if info.get("trained") else "untrained" if is_untrained(info) else "not fine-tuned"
    parts = [
        f"gallery: {info['gallery_size']:,} images ({info['index_kind']} index)",
        f"model: ResNet50, {info['image_size']} px, {info['embedding_dim']}-d, {model}",
        f"backbone weights: {weights}",
    ]
    if info.get("model_source"):
        parts.append(f"model from: {info['model_source']}")
    if seconds is not None:
        query = f"query: {seconds * 1000:.0f} ms" + (f", {n_hits} results" if n_hits is not None else "")
        if merged is not None:
            query += f", {merged} near-duplicate{'s' * (merged != 1)} merged"
        parts.append(query)
    if filters:
        parts.append("filters: " + "; ".join(f"{a} = {' or '.join(vs)}" for a, vs in filters.items()))
    return " · ".join(parts)


def visitor_source(source: str | None, root: str | os.PathLike | None) -> str | None:
    """Which model this is, as a visitor may read it: folders named relative to the artifacts folder (no
    server paths), without the list of places looked in."""
    if not source:
        return source
    if root is not None:
        root = str(Path(root).resolve())
        source = source.replace(root + os.sep, "").replace(f" in {root}", "").replace(root, ".")
    return re.sub(r" \(looked for [^)]*\)", "", source)


def gallery_roots(folders: Sequence[str | os.PathLike], uploads: str | os.PathLike | None = None) -> tuple:
    """Where a visitor's paths start: ``((folder, prefix), ...)``, the upload folder first (its images named
    ``gallery_uploads/<file>``), then the folder holding every other image folder (its images named relative to
    it). ``folders``: the gallery's image folders (:func:`simlib.search.gallery.gallery_folders`)."""
    roots = []
    up = Path(uploads).resolve() if uploads is not None else None
    if up is not None:
        roots.append((str(up), up.name + "/"))
    others = [str(Path(f).resolve()) for f in folders if up is None or not Path(f).resolve().is_relative_to(up)]
    if others:
        roots.append((os.path.commonpath(others), ""))
    return tuple(roots)


def visitor_path(path: str | None, roots: Sequence[tuple[str, str]] = ()) -> str | None:
    """A gallery image's path as a visitor reads it: relative to the gallery's root (:func:`gallery_roots`),
    with ``/`` separators; its file name alone when it is under none of them (never a server path)."""
    if not path:
        return path
    p = Path(path)
    for folder, prefix in roots:
        if p.is_relative_to(folder):
            return prefix + p.relative_to(folder).as_posix()
    return p.name


def hit_record(hit, roots: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """A hit for the structured (JSON) output: rank, id, score, label, gallery_path, attributes, duplicates, weak,
    probability, unlike_gallery.

    ``gallery_path`` is the image's path relative to the gallery's root (:func:`visitor_path`; the server's own
    folders are not shown), and not under ``path``: gradio_client takes any dict with a "path" key for a file to
    download and would replace the whole record with a local copy. The image itself is in the results gallery.
    """
    d = hit.to_dict()
    d["gallery_path"] = visitor_path(d.pop("path"), roots)
    return d


def feedback_message(entry, rank: int | None = None) -> str:
    """The thanks for a stored verdict (:class:`~simlib.search.feedback.Feedback`), naming the result by rank."""
    which = f"result #{rank}" if rank else f"gallery image {entry.result_id}"
    if entry.verdict not in VERDICT_LABELS:
        return f"Your verdict on {which} is taken back."
    return f"Your verdict on {which}: **{VERDICT_LABELS[entry.verdict]}** (change it any time, or undo it)."


def verdict_message(verdict: str | None, rank: int | None = None) -> str:
    """What the page says about the current verdict on a clicked result ("" when there is none)."""
    which = f"result #{rank}" if rank else "this result"
    return f"Your verdict on {which}: **{VERDICT_LABELS[verdict]}**." if verdict in VERDICT_LABELS else ""


UNLIKE_BANNER = (
    "### Low confidence: this image looks unlike anything in the gallery\nIts pixels are unlike those of this "
    "gallery's photos (a check calibrated on the gallery: at most 1 in 100 images like the gallery's is "
    "flagged): the results below are only the closest images, not a match."
)


def banner_text(results: Mapping[str, Any]) -> str:
    """The "No good match" banner (Markdown) for a search's JSON results (:meth:`SearchResult.to_json`), or ""
    when it does not apply (no calibration, or one the model cannot support: ``no_good_match`` is then None).
    It says why: the query looks unlike the gallery, or no result reaches the calibrated score."""
    if not results.get("no_good_match"):
        return ""
    if results.get("unlike_gallery"):
        return UNLIKE_BANNER
    if results.get("threshold") is None:
        return "### Low confidence: no good match"
    hits = results.get("hits") or []
    best = f" (best score {hits[0]['score']:.4f})" if hits else ""
    return (
        f"### Low confidence: no good match\nNo gallery image reaches the similarity {results['threshold']:.4f} "
        f"that this gallery's right answers almost always reach{best}: the results below are only the closest "
        "images, probably not the same kind of thing."
    )


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """One query's answer: the hits and what the page and the API show of them.

    Attributes:
        hits: the results, best first (``Hit.weak`` set from the calibrated threshold).
        k: the number asked for.
        filters: attribute -> allowed values, as applied.
        collapse: the duplicate-collapse threshold used (None: off).
        seconds: embedding plus search time.
        info: ``Searcher.info().to_dict()`` read together with the hits (gallery size, model, threshold).
        roots: where the gallery's paths start, for the JSON's ``gallery_path`` (:func:`gallery_roots`).
    """

    hits: list
    k: int
    filters: dict[str, list[str]]
    collapse: float | CopyCut | None
    seconds: float
    info: dict[str, Any]
    roots: tuple = ()

    @property
    def threshold(self) -> float | None:
        """The calibrated "good match" score (None: not calibrated)."""
        return self.info["threshold"]

    @property
    def merged(self) -> int | None:
        """Near-duplicates merged into the hits (None when collapse was off)."""
        return None if self.collapse is None else sum(h.duplicates for h in self.hits)

    @property
    def no_good_match(self) -> bool | None:
        """True when no hit clears the calibrated threshold or the query looks unlike the gallery; None when
        neither check is calibrated (or supported by the model)."""
        from simlib.search import no_good_match

        if self.threshold is None and not self.info.get("unlike_check"):
            return None
        return self.unlike_gallery or (self.threshold is not None and no_good_match(self.hits))

    @property
    def unlike_gallery(self) -> bool | None:
        """True when the query image looks unlike anything in the gallery; None without a supported check."""
        if not self.info.get("unlike_check"):
            return None
        return any(h.unlike_gallery for h in self.hits)

    @property
    def gallery(self) -> list[tuple[str, str]]:
        """``[(image path, caption)]`` for the hits that have a file (``Hit.caption``)."""
        return [(h.path, h.caption()) for h in self.hits if h.path]

    @property
    def status(self) -> str:
        """The status line after this query."""
        return status_text(self.info, self.seconds, len(self.hits), self.merged, self.filters)

    def calibration_note(self) -> str:
        """The line under the results when the model cannot support its calibration ("" otherwise)."""
        return self.info.get("unsupported_note") or ""

    def banner(self) -> str:
        """The "No good match" banner (Markdown), or "" when it does not apply (never for an unsupported
        calibration: :attr:`threshold` is then None)."""
        return banner_text(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """``{"k", "filters", "query_ms", "collapse", "merged", "threshold", "no_good_match", "unlike_gallery",
        "hits"}`` (each hit as :func:`hit_record`): the API's structured results."""
        return {
            "k": self.k,
            "filters": self.filters,
            "query_ms": round(self.seconds * 1000, 1),
            "collapse": self.collapse.score if isinstance(self.collapse, CopyCut) else self.collapse,
            "merged": self.merged,
            "threshold": self.threshold,
            "no_good_match": self.no_good_match,
            "unlike_gallery": self.unlike_gallery,
            "hits": [hit_record(h, self.roots) for h in self.hits],
        }

    def outputs(self) -> tuple[list[tuple[str, str]], dict[str, Any], str]:
        """``(gallery, results, status)``: what the ``/search`` endpoint returns."""
        return self.gallery, self.to_json(), self.status


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Why a gallery image is similar to the query.

    Attributes:
        query, result: the two images as RGB uint8 arrays, :data:`EXPLAIN_SIZE` px on the longer side.
        query_heat, result_heat: the same with their similarity heat maps blended over them
            (:func:`simlib.search.explain.overlay`).
        hit: the result scored against the query (``id``, ``score``, ``weak``, ``label``).
        text: one Markdown line for the page.
        note: for an untrained model, what its heat maps show (raw feature overlap), else "".
        legend: the colour bar (HTML) of these two maps: the colours they actually use.
    """

    query: Any
    query_heat: Any
    result: Any
    result_heat: Any
    hit: Any
    text: str
    note: str = ""
    legend: str = ""

    def details(self) -> dict[str, Any]:
        """``{id, score, weak, label}``: what the ``/explain`` endpoint returns beside the heat maps."""
        return {"id": self.hit.id, "score": self.hit.score, "weak": self.hit.weak, "label": self.hit.label}


class AddResult(NamedTuple):
    """What adding an image did: a message for the page and the new ids (empty when nothing was added)."""

    message: str
    ids: list[int]


def outcome_message(done, saved: bool) -> str:
    """What the page says after training (:class:`simlib.train.retrain.RetrainResult`): kept or not, in plain
    words, with the validation Recall@1 before and after."""
    recall = f"validation Recall@1 {done.before:.2f} -> {done.after:.2f}"
    if not done.kept:
        return (
            f"Not kept: the new model is no better than the one served ({recall}, {done.seconds:.0f} s); "
            "the app keeps serving it."
        )
    feedback = f", {done.feedback} feedback verdict pairs used" if done.feedback else ""
    return (
        f"Kept: {recall} ({done.seconds:.0f} s{feedback}). The gallery is re-indexed and re-calibrated and the app "
        "now serves the new model" + (" (saved: the next start uses it)." if saved else ".")
    )


class TrainOutcome(NamedTuple):
    """What :meth:`GalleryService.train` did: a message for the page, the validation Recall@1, the seconds."""

    message: str
    val_recall: float
    seconds: float
    kept: bool = True
