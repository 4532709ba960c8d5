"""The page's near-duplicates panel: the served gallery's groups of near-copies, each with its suggested keep.

Read-only: the panel lists the groups :func:`simlib.photos.duplicates.review_duplicates` finds (the same
groups, thresholds and keep as ``simlib duplicates``) as a contact sheet, and deletes, moves and writes
nothing (the calibration stays in memory, the cached thumbnails are read, never written). Moving the
copies aside is the command's ``--move-to``, run by whoever owns the folder.

The API endpoint ``/duplicates`` ``()`` -> ``(gallery, summary, groups)``: the groups are those of the
command's ``--json``, each image's ``path`` named ``gallery_path`` (as ``/search`` names it: a client would
take a ``path`` for a file to download).
"""

from __future__ import annotations

import threading
from typing import Any

from simlib.errors import SimlibError

MAX_SHOWN = 50  # groups drawn on the contact sheet (the JSON lists every one)
MOVE_HOWTO = (
    "Nothing here deletes or moves a file: `simlib duplicates --index DIR --move-to FOLDER` moves the copies aside."
)


def sheet_items(groups, max_groups: int = MAX_SHOWN) -> list[tuple[str, str]]:
    """The contact sheet as gallery tiles: ``(path, caption)`` for each image of the first ``max_groups`` groups,
    the suggested keep first, captioned with its group, its role (keep, or its cosine with the keep) and size."""
    items = []
    for n, g in enumerate(groups[:max_groups], 1):
        for m in (g.keep, *g.others):
            role = "keep" if m is g.keep else f"copy {m.score:.6g}"
            if m.path:
                items.append((m.path, f"group {n}: {role}, {m.width}x{m.height}"))
    return items


def api_groups(review) -> dict[str, Any]:
    """The review as ``/duplicates`` returns it: :meth:`Review.to_dict` with ``gallery_path`` for ``path``."""
    body = review.to_dict()
    for g in body["groups"]:
        for m in (g["keep"], *g["others"]):
            m["gallery_path"] = m.pop("path")
    return body


def summary_text(review, max_groups: int = MAX_SHOWN) -> str:
    """One paragraph: how many groups and images, at which thresholds, and that nothing is deleted."""
    n = len(review.groups)
    images = sum(1 + len(g.others) for g in review.groups)
    pixels = "" if review.pixel_threshold is None else f" and thumbnail correlation >= {review.pixel_threshold:.6g}"
    shown = f" (the first {max_groups} shown)" if n > max_groups else ""
    head = (
        f"**{n} group(s) of near-duplicates** ({images} images){shown} at cosine >= {review.threshold:.6g}{pixels}; "
        "each row starts with the suggested keep (largest resolution, then oldest file)."
        if n
        else f"No near-duplicates at cosine >= {review.threshold:.6g}{pixels}."
    )
    return f"{head}\n\n{MOVE_HOWTO}"


class DuplicatesView:
    """The served gallery's near-duplicate groups, computed on first request and again only when the gallery
    changed (its ids); one computation at a time."""

    def __init__(self, service) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._answer: tuple[list, str, dict] | None = None

    def find(self) -> tuple[list[tuple[str, str]], str, dict[str, Any]]:
        """``(contact sheet tiles, summary, {"threshold", "pixel_threshold", "calibration", "groups"})``; when
        the model cannot tell copies from look-alikes, no groups and a summary that says so."""
        from simlib.photos.duplicates import Fingerprints, review_duplicates
        from simlib.photos.store import work_dir

        service = self.service
        with self._lock, service.lock:
            index = service.searcher.index
            ids = tuple(int(i) for i in index.ids)
            key = (service.searcher.fingerprint, hash(ids))
            if key != self._key or self._answer is None:
                folder = work_dir(service.index_dir) if service.index_dir is not None else None
                fingerprints = Fingerprints(index, folder)  # the command's cache, read only
                try:
                    review = review_duplicates(service.searcher, fingerprints)
                except SimlibError as e:
                    self._answer = ([], f"{e}.\n\n{MOVE_HOWTO}", {"groups": [], "error": str(e)})
                else:
                    self._answer = (sheet_items(review.groups), summary_text(review), api_groups(review))
                self._key = key
            return self._answer


def duplicates_region(service) -> None:
    """A folded "Near-duplicates in this gallery" panel: a button, the contact sheet, the summary and the groups as
    JSON (``/duplicates``). Called inside the page's ``gr.Blocks``."""
    import gradio as gr

    from simlib.app.inputs import visitor_errors

    with service.lock:
        if not any(r.path for r in service.searcher.index.records()):
            return  # a gallery of arrays (Fashion-MNIST): no files to compare
    view = DuplicatesView(service)
    with gr.Accordion("Near-duplicates in this gallery", open=False, elem_id="duplicates"):
        gr.Markdown(
            "Groups of near-copies (resized, re-encoded or identical files) across the whole gallery, "
            "each with the copy to keep. Read-only."
        )
        button = gr.Button("Find near-duplicates", elem_id="find-duplicates")
        summary = gr.Markdown(elem_id="duplicates-summary")
        label = "Near-duplicate groups (the keep first; click one to enlarge it)"
        sheet = gr.Gallery(label=label, columns=4, object_fit="contain", elem_id="duplicates-sheet")
        with gr.Accordion("Groups as JSON", open=False):
            groups = gr.JSON(label="groups")

    @visitor_errors(lambda args, kwargs: None)
    def find_duplicates() -> tuple[list, str, dict]:
        """The gallery's groups of near-duplicate images, each with the suggested image to keep (read-only).

        Returns:
            The images of each group (the keep first) with captions, a one-paragraph summary, and
            ``{"threshold", "pixel_threshold", "calibration", "groups": [{"keep", "others"}]}``.
        """
        return view.find()

    button.click(find_duplicates, inputs=None, outputs=[sheet, summary, groups], api_name="duplicates",
                 concurrency_limit=1)  # fmt: skip
