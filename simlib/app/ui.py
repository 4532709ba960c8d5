"""The demo's Gradio page over a :class:`simlib.app.service.GalleryService`: ``build_demo(service)``.

The page only lays out components and translates: widget values and uploads in
(:mod:`simlib.app.inputs`), the service's results out, a :class:`simlib.errors.SimlibError` into one
``gr.Error`` line (:func:`visitor_errors`). Each region of the page is built by one function that also
wires its events; the API endpoints without a button (``/explain``, ``/feedback``) are declared with
``gr.api`` from typed functions.

The HTTP API (unchanged since the first app): ``/search`` ``(image, k, <filters>..., collapse)`` ->
``(gallery, results, status)``; ``/explain`` ``(image, result_id)`` -> ``(query_heat, result_heat,
details)``; ``/feedback`` ``(image, result_id, verdict)`` -> message (with an artifacts folder);
``/add_to_gallery`` ``(image)`` -> ``(message, status)`` (with ``allow_add``).
"""

import dataclasses
import functools
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from simlib.app.duplicates import duplicates_region
from simlib.app.inputs import make_filters, uploaded_image, visitor_errors
from simlib.app.results import FEEDBACK_WHERE, banner_text, feedback_message, verdict_message
from simlib.app.service import CONCURRENCY_LIMIT, DEFAULT_K, MAX_K, QUEUE_SIZE, GalleryService
from simlib.app.style import (
    EXPLAIN_HELP,
    HEAT_LEGEND,
    TITLE,
    TRAIN_HELP,
    TRAIN_OFFER,
    UNTRAINED_HOWTO,
    UNTRAINED_NOTICE,
)
from simlib.search.feedback import CLEARED

__all__ = ["TITLE", "build_demo", "visitor_errors"]


def with_parameters(fn: Callable, names: Sequence[str]) -> Callable:
    """``fn`` (taking ``*args``) presented with these positional parameter names: Gradio names an
    endpoint's API parameters after its function's signature, and the filters are only known at run time."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    fn.__signature__ = inspect.Signature([inspect.Parameter(n, kind) for n in names])  # type: ignore[attr-defined]
    return fn


def png_file(image: Any) -> FileData:
    """An RGB array saved as PNG in Gradio's cache, as an output file of an API endpoint."""
    from gradio.processing_utils import save_img_array_to_cache
    from gradio.utils import get_upload_folder

    return FileData(path=save_img_array_to_cache(image, cache_dir=get_upload_folder(), format="png"))


# On a narrow screen the results sit below the query image and its controls: bring the first row into view
# after a search (on a wide screen they are beside the query, in view already). A tapped result's explanation
# opens below the results: bring it into view too.
SCROLL_TO_RESULTS = (
    "() => { if (window.innerWidth < 700) document.querySelector('#results')"
    "?.scrollIntoView({behavior: 'smooth', block: 'start'}); }"
)
SCROLL_TO_EXPLANATION = (
    "() => { document.querySelector('#explain')?.scrollIntoView({behavior: 'smooth', block: 'start'}); }"
)
REAR_CAMERA = {"video": {"facingMode": {"ideal": "environment"}}, "audio": False}


def field_label(field: str) -> str:
    """A filter's label as a visitor reads it: ``masterCategory`` -> "Master category", ``label`` -> "Label"."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", field.replace("_", " ")).split()
    return " ".join(words).capitalize() if words else field


def _state_query(args: tuple, kwargs: dict) -> Any:
    state = args[0] if args else None
    return state.get("query") if isinstance(state, dict) else None


# ----------------------------------------------------------------------------- page regions
@dataclasses.dataclass
class Query:
    """The query region's components."""

    image: gr.Image
    top_k: gr.Slider
    button: gr.Button
    filters: list
    collapse: gr.Checkbox

    @property
    def inputs(self) -> list:
        """The search's inputs, in the ``/search`` endpoint's order."""
        return [self.image, self.top_k, *self.filters, self.collapse]


@dataclasses.dataclass
class Results:
    """The results region's components (and the per-visitor state of what is on show)."""

    banner: gr.Markdown
    gallery: gr.Gallery
    calibration: gr.Markdown
    status: gr.Markdown
    details: gr.JSON | None  # made after the explanation, below it (details_region)
    last: gr.State

    @property
    def outputs(self) -> list:
        """What a search writes, in the ``/search`` endpoint's order."""
        return [self.gallery, self.details, self.status]


def query_region(service: GalleryService, k: int) -> Query:
    """The query image, Top-K, the Search button and the folded filters."""
    image = gr.Image(
        sources=["upload", "webcam", "clipboard"],
        type="filepath",
        label="Query image",
        height=260,
        elem_id="query",
        # On a phone, the camera on the back (what a visitor points at a product); a laptop has only the front one.
        webcam_options=gr.WebcamOptions(mirror=False, constraints=REAR_CAMERA),
    )
    with gr.Row(equal_height=True):
        top_k = gr.Slider(1, MAX_K, value=min(max(int(k), 1), MAX_K), step=1, label="Top-K", elem_id="k", scale=3)
        button = gr.Button("Search", variant="primary", elem_id="search", scale=1, min_width=90)
    with gr.Accordion("Filters and duplicates", open=False, elem_id="options"):
        filters = [
            gr.Dropdown(
                choices=[v for v in values if v.strip()],  # an empty attribute is no choice a visitor can make
                value=[],
                multiselect=True,
                label=field_label(field),
                elem_id=f"filter-{field}",
            )
            for field, values in service.filter_choices.items()
        ]
        collapse = gr.Checkbox(
            value=True,
            label="Merge near-duplicates",
            info=service.collapse_text,
            elem_id="collapse",
        )
    return Query(image, top_k, button, filters, collapse)


def results_region(service: GalleryService) -> Results:
    """The "no good match" banner, the result tiles, the calibration note and the status line."""
    banner = gr.Markdown(visible=False, elem_id="no-match")
    gallery = gr.Gallery(
        label="Most similar (click one: why is it similar?)",
        columns=4,
        object_fit="contain",
        height="auto",
        allow_preview=False,
        elem_id="results",
    )
    note = service.calibration_note()
    calibration = gr.Markdown(note, visible=bool(note), elem_id="calibration-note")
    status = gr.Markdown(service.status(), label="status", elem_id="status")
    return Results(banner, gallery, calibration, status, None, gr.State(None))


def details_region(results: Results) -> None:
    """The results as JSON, folded (what the ``/search`` endpoint returns)."""
    with gr.Accordion("Results as JSON", open=False):
        results.details = gr.JSON(label="results")


def explain_region(service: GalleryService, results: Results) -> dict[str, Any]:
    """ "Why is it similar?" for a clicked result (heat maps) and the feedback buttons; wires the click.

    Returns:
        ``{"box", "selected", "feedback_status"}``: what a new search hides or resets.
    """
    selected = gr.State(None)  # per visitor: the result clicked, with its query
    with gr.Column(visible=False, elem_id="explain") as box:
        gr.Markdown(EXPLAIN_HELP)
        legend = gr.HTML(HEAT_LEGEND)  # each explanation's own colour bar
        text = gr.Markdown(elem_id="explain-text")
        note = gr.Markdown(elem_id="explain-note")
        with gr.Row():
            names = (("query", "query"), ("query-heat", "query heat map"), ("result-heat", "result heat map"))
            images = [
                gr.Image(
                    label=label,
                    interactive=False,
                    height=220,
                    format="png",
                    buttons=["fullscreen"],
                    elem_id=f"explain-{n}",
                )
                for n, label in (*names, ("result", "result"))
            ]
        buttons = {}
        if service.takes_feedback:
            with gr.Row():
                buttons["similar"] = gr.Button("Similar", elem_id="fb-similar", size="sm")
                buttons["not_similar"] = gr.Button("Not similar", elem_id="fb-not-similar", size="sm")
                buttons[CLEARED] = gr.Button("Undo my verdict", elem_id="fb-clear", size="sm")
        feedback_status = gr.Markdown(elem_id="feedback-status")
        if service.takes_feedback:
            gr.Markdown(FEEDBACK_WHERE, elem_id="feedback-where")
        for verdict, button in buttons.items():
            button.click(_feedback_handler(service, verdict), [selected], [feedback_status], api_visibility="private")

    @visitor_errors(_state_query)
    def show(last: dict | None, evt: gr.SelectData):
        if not last or evt.index is None or not 0 <= evt.index < len(last["shown"]):
            raise gr.Error("search first, then click a result", print_exception=False)
        hit = last["shown"][evt.index]
        e = service.explain(last["query"], hit["id"], rank=hit["rank"])
        shown = (e.query, e.query_heat, e.result_heat, e.result)
        current = verdict_message(service.verdict(last["query"], hit["id"]), hit["rank"])
        selected_hit = {**hit, "query": last["query"]}
        return *shown, e.text, e.note, selected_hit, gr.update(visible=True), current, e.legend or HEAT_LEGEND

    results.gallery.select(
        show,
        inputs=[results.last],
        outputs=[*images, text, note, selected, box, feedback_status, legend],
        api_visibility="private",
    ).then(None, js=SCROLL_TO_EXPLANATION)
    return {"box": box, "selected": selected, "feedback_status": feedback_status}


def _feedback_handler(service: GalleryService, verdict: str) -> Callable[[dict | None], str]:
    """The click handler of a feedback button: stores ``verdict`` on the result the visitor clicked."""

    @visitor_errors(_state_query)
    def handler(chosen: dict | None) -> str:
        if not chosen:
            raise gr.Error("click a result first, then say whether it is similar", print_exception=False)
        return feedback_message(service.feedback(chosen["query"], chosen["id"], verdict), chosen["rank"])

    return handler


# ----------------------------------------------------------------------------- events
def wire_search(service: GalleryService, query: Query, results: Results, explain: dict[str, Any]) -> dict:
    """Search on every change of the query or its options, and on the Search button (``/search``).

    Returns:
        The keyword arguments of the "after a search" step (banner, note, explanation reset), for
        events that search again (training).
    """
    fields = list(service.filter_choices)

    @visitor_errors()
    def find_similar_images(image, k, *rest):
        *filter_values, collapse_on = rest
        path = uploaded_image(image)
        filters = make_filters(fields, filter_values)
        return service.search(path, int(k), filters, service.collapse if collapse_on else None).outputs()

    # The API names the parameters after the filters, not param_2, param_3...; an AI assistant calling the
    # endpoint as an MCP tool reads the docstring (its Args become the tool's parameter descriptions).
    run_search = with_parameters(find_similar_images, ["image", "k", *fields, "collapse"])
    run_search.__doc__ = search_doc(fields, service.filter_choices)
    after = {
        "fn": functools.partial(_after_search, service),
        "inputs": [query.image, results.details],
        "preprocess": False,
        "outputs": [
            results.last,
            results.banner,
            results.calibration,
            explain["box"],
            explain["selected"],
            explain["feedback_status"],
        ],
        "api_visibility": "private",
    }
    # The handler gets the upload as Gradio received it, undecoded: stock gr.Image opens it with
    # Pillow first, so a file that is not an image fails inside Gradio with a traceback. simlib
    # decodes instead (one path for gallery and queries: any mode, EXIF, pixel limit before
    # decoding) and a bad upload gets one clear message.
    auto = gr.on(
        # change: upload, webcam capture, paste, example click and clearing the image
        triggers=[query.image.change, query.top_k.change, *(w.change for w in query.filters), query.collapse.change],
        fn=functools.partial(_search_if_image, service, run_search),
        inputs=query.inputs,
        outputs=results.outputs,
        preprocess=False,
        trigger_mode="always_last",  # one at a time per visitor; what changed meanwhile runs once after
        api_visibility="private",
        show_progress="minimal",
    )
    auto.success(**after).then(None, js=SCROLL_TO_RESULTS)
    click = query.button.click(
        run_search,
        inputs=query.inputs,
        outputs=results.outputs,
        api_name="search",
        preprocess=False,
        cancels=[auto],  # an automatic search still queued is superseded by the click
    )
    click.success(**after).then(None, js=SCROLL_TO_RESULTS)
    return {"after": after, "search": functools.partial(_search_if_image, service, run_search)}


def search_doc(fields: Sequence[str], choices: dict[str, list[str]]) -> str:
    """The ``/search`` endpoint's description (API page, MCP tool): what it takes, returns and what the
    verdicts mean, with this gallery's filters."""
    filters = "".join(
        f"        {f}: only results whose {field_label(f).lower()} is one of these values (empty list: any); "
        f"values: {', '.join(v for v in choices[f][:12] if v.strip())}.\n"
        for f in fields
    )
    return (
        "Find the gallery images that look most like the given image (visual similarity; no text, no tags).\n\n"
        "Args:\n"
        "        image: the query image: an http(s) URL or a data:image/...;base64 URL.\n"
        f"        k: how many results to return (1 to {MAX_K}).\n" + filters + "        collapse: merge results "
        "that are near-copies of a better-ranked one (true by default) so the k results are distinct items.\n\n"
        "Returns:\n"
        "        The result images with captions; a JSON object whose 'hits' list each result's rank, gallery id, "
        "score (cosine similarity: 1 = identical, higher is more alike; compare scores within one query only), "
        "label, attributes and 'weak' (under the similarity this gallery was calibrated to call a good match); "
        "'no_good_match' is true when no result reaches that calibrated score or the image looks unlike anything "
        "in the gallery ('unlike_gallery' true): the images are only the closest the gallery has, probably not the "
        "same kind of thing (null: this gallery has no calibration it can trust); and a one-line status.\n"
    )


def _after_search(service: GalleryService, image, found: dict | None):
    """What the page keeps of the answer on show (for a click on a result) and the lines around it.

    Kept apart from the search itself: the ``/search`` endpoint (and the MCP tool made from it) returns
    only what a client reads, no per-visitor state.
    """
    last = None
    if found and image is not None:
        shown = [{"id": h["id"], "rank": h["rank"]} for h in found["hits"] if h.get("gallery_path")]
        last = {"query": uploaded_image(image), "shown": shown}
    text = banner_text(found) if found else ""
    note = service.calibration_note()
    return (
        last,
        gr.update(value=text, visible=bool(text)),
        gr.update(value=note, visible=bool(note)),
        gr.update(visible=False),
        None,
        "",
    )


def _search_if_image(service: GalleryService, run_search: Callable, image, k, *rest):
    """The automatic search: nothing to search after the image was cleared (no error)."""
    if image is None:
        return [], None, service.status()
    return run_search(image, k, *rest)


def add_region(service: GalleryService, query: Query, results: Results) -> None:
    """ "Add this image to the gallery" (``/add_to_gallery``), with ``allow_add``."""
    button = gr.Button("Add this image to the gallery", elem_id="add")
    message = gr.Markdown(elem_id="add-status")

    @visitor_errors()
    def run_add(image):
        return service.add(uploaded_image(image)).message, service.status()

    button.click(
        run_add, inputs=[query.image], outputs=[message, results.status], api_name="add_to_gallery", preprocess=False
    )


def train_region(service: GalleryService, query: Query, results: Results, notice: gr.Markdown, search: dict) -> None:
    """ "Train a model on this gallery": trains, swaps the model, then searches again with the new one."""
    with gr.Group(elem_id="train-box"):
        gr.Markdown(TRAIN_HELP)
        button = gr.Button("Train a model on this gallery", variant="primary", elem_id="train")
        message = gr.Markdown(elem_id="train-status")

    @visitor_errors(lambda args, kwargs: None)
    def run_train(progress=gr.Progress()):  # noqa: B008 (Gradio's way to report progress)
        outcome = service.train(progress=lambda fraction, text: progress(fraction, desc=text))
        # Kept: the notice and the button go (the model is trained now); not kept: both stay, and the
        # message says why in plain words (a normal outcome, not an error).
        return (
            outcome.message,
            service.status(),
            gr.update(visible=service.untrained),
            gr.update(visible=not outcome.kept),
        )

    button.click(
        run_train,
        inputs=None,
        outputs=[message, results.status, notice, button],
        api_visibility="private",
        concurrency_limit=1,
        show_progress_on=[message],  # the progress bar by the button, not over the page's notice
    ).success(
        search["search"], inputs=query.inputs, outputs=results.outputs, preprocess=False, api_visibility="private"
    ).success(**search["after"])


def api_endpoints(service: GalleryService) -> None:
    """The endpoints without a button: ``/explain`` and (with an artifacts folder) ``/feedback``."""

    @visitor_errors()
    def explain(image: FileData, result_id: int) -> tuple[FileData, FileData, dict]:
        """Both images' similarity heat maps (PNG) and ``{id, score, weak, label}`` of the result."""
        e = service.explain(uploaded_image(image), result_id)
        return png_file(e.query_heat), png_file(e.result_heat), e.details()

    gr.api(explain, api_name="explain")
    if service.takes_feedback:

        @visitor_errors()
        def feedback(image: FileData, result_id: int, verdict: str) -> str:
            """Store "similar" or "not_similar" for a result of this query (kept as training data)."""
            return feedback_message(service.feedback(uploaded_image(image), result_id, str(verdict)))

        gr.api(feedback, api_name="feedback")


# ----------------------------------------------------------------------------- the page
def build_demo(service: GalleryService, k: int = DEFAULT_K, title: str = TITLE) -> gr.Blocks:
    """The page for ``service``: image in, the top-K most similar gallery images out.

    The page searches as soon as there is an image (upload, webcam capture, paste, example click)
    and again when Top-K, a filter or the duplicate switch changes; the Search button re-runs it.
    Per visitor one search runs at a time: changes made meanwhile are searched once, with their
    latest values, when it finishes (``trigger_mode="always_last"``), and a click on Search cancels a
    queued automatic search. Layout: the query, Top-K and Search first, the results right after them
    (on a phone: below the query), the filters folded, the example queries last.

    Args:
        service: the gallery service (its ``takes_feedback``, ``allow_add`` and ``can_train`` decide the
            feedback buttons, the "Add to gallery" button and endpoint, and "Train a model on this gallery").
        k: the Top-K slider's starting value.
        title: the page title.

    Returns:
        A ``gr.Blocks`` with its queue set (see the module docstring for its API); launch it with
        ``css=CSS`` (:func:`simlib.app.server.launch_settings` does).
    """
    can_train = service.can_train
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nUpload, capture or paste an image: the most similar gallery images appear.")
        with gr.Column(visible=service.untrained, elem_id="untrained-notice") as notice:
            gr.Markdown(UNTRAINED_NOTICE + (TRAIN_OFFER if can_train else ""))
            with gr.Accordion("How to serve a better model", open=False):
                gr.Markdown(UNTRAINED_HOWTO)
        with gr.Row(equal_height=False):
            query_column = gr.Column(scale=1, min_width=280)
            results_column = gr.Column(scale=2, min_width=280)
        with query_column:
            query = query_region(service, k)
        with results_column:
            results = results_region(service)
            explain = explain_region(service, results)
            details_region(results)
        search = wire_search(service, query, results, explain)
        if service.allow_add:
            with query_column:
                add_region(service, query, results)
        if service.examples:
            gr.Examples(examples=[[p] for p in service.examples], inputs=[query.image], label="Example queries")
        if can_train:
            with results_column:
                train_region(service, query, results, notice, search)
        api_endpoints(service)
        duplicates_region(service)  # folded, at the bottom: the gallery's near-duplicates (read-only)
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo
