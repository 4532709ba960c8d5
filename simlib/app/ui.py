"""The demo's Gradio page over a :class:`simlib.app.service.GalleryService`: ``build_demo(service)``.

The page only lays out components and translates: widget values and uploads in
(:mod:`simlib.app.inputs`), the service's results out, a :class:`simlib.errors.SimlibError` into one
``gr.Error`` line. Each event is wired where its component is laid out; the API endpoints without a
button (``/explain``, ``/feedback``) are declared with ``gr.api`` from typed functions.

The HTTP API (unchanged since the first app): ``/search`` ``(image, k, <filters>..., collapse)`` ->
``(gallery, results, status)``; ``/explain`` ``(image, result_id)`` -> ``(query_heat, result_heat,
details)``; ``/feedback`` ``(image, result_id, verdict)`` -> message (with an artifacts folder);
``/add_to_gallery`` ``(image)`` -> ``(message, status)`` (with ``allow_add``).
"""

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from simlib.app.inputs import make_filters, uploaded_image, user_message
from simlib.app.service import (
    CONCURRENCY_LIMIT,
    DEFAULT_K,
    MAX_K,
    QUEUE_SIZE,
    GalleryService,
    feedback_message,
)
from simlib.errors import SimlibError

TITLE = "simlib: find similar images"
UNTRAINED_NOTICE = (
    "**This model is untrained.** Its ResNet50 backbone has random weights (no ImageNet weights could be "
    "loaded and no trained model was found), so results follow colours and rough shapes, not what the "
    "objects are. Train a model in the course (notebook 03 saves `artifacts/course/model_labels`, which the "
    "app then picks up) or with `simlib train --out artifacts/model`, or use `--weights imagenet` on a "
    "machine that can download them."
)
TRAIN_OFFER = " Or train one right here: **Train a model on this gallery**, below the results."
TRAIN_HELP = (
    "### Train a model on this gallery\nTrains a small head on this gallery's labels over the frozen "
    "backbone (at most two minutes, then the gallery is re-indexed and re-calibrated: about three minutes "
    "on a 2-core machine), then serves the new model without a restart, if it does better than this one."
)
EXPLAIN_HELP = "### Why are they similar?"
# The colour bar of the heat maps (Matplotlib's "jet", as simlib.search.explain.overlay paints them).
HEAT_LEGEND = (
    '<div id="heat-legend"><span>least</span><span class="heat-bar"></span><span>most</span></div>'
    '<p id="heat-guide">How to read it: the warm (red) parts of each image are the ones whose features best '
    "match the other image; blue parts match least. Colours compare regions within one pair only.</p>"
)
# Captions wrap below the image instead of being cut ("#1 · 0.998 · Flip Flops · w…"); the grid's columns
# follow the gallery's width (Gradio's fixed 4 columns of 100 px overflowed a phone); on a narrow screen
# the page keeps to the screen's width.
CSS = """
#results .grid-container {
  grid-template-columns: repeat(auto-fill, minmax(104px, 1fr)) !important;
  grid-template-rows: none !important; grid-auto-rows: auto !important;
}
#results .thumbnail-item { aspect-ratio: auto !important; height: auto !important; display: flex;
  flex-direction: column; overflow: visible !important; }
#results .thumbnail-item img { aspect-ratio: 1 / 1; height: auto !important; width: 100%; }
#results .caption-label { position: static !important; max-width: 100% !important; white-space: normal !important;
  overflow: visible !important; text-overflow: clip !important; overflow-wrap: anywhere; border: none !important;
  border-top: 1px solid var(--border-color-primary) !important; border-radius: 0 !important;
  line-height: 1.25; padding: 2px 4px !important; font-size: var(--text-sm) !important; }
#heat-legend { display: flex; align-items: center; gap: 8px; font-size: var(--text-sm); }
#heat-legend .heat-bar { flex: 1; max-width: 320px; height: 12px; border-radius: 3px;
  background: linear-gradient(to right, #00007f, #0000ff, #007fff, #00ffff, #7fff7f, #ffff00, #ff7f00,
    #ff0000, #7f0000); }
#heat-guide { font-size: var(--text-sm); margin: 4px 0 0 0; }
@media (max-width: 640px) {
  .gradio-container { padding-left: 6px !important; padding-right: 6px !important; max-width: 100vw !important; }
  body { overflow-x: hidden; }
}
"""


def user_error(error: SimlibError, image: Any) -> gr.Error:
    """A service error as the one line a visitor sees (no traceback, no server paths)."""
    return gr.Error(user_message(error, image), print_exception=False)


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


def feedback_handler(service: GalleryService, verdict: str) -> Callable[[dict | None], str]:
    """The click handler of a feedback button: stores ``verdict`` on the result the visitor clicked."""

    def handler(chosen: dict | None) -> str:
        if not chosen:
            raise gr.Error("click a result first, then say whether it is similar", print_exception=False)
        try:
            entry = service.feedback(chosen["query"], chosen["id"], verdict)
        except SimlibError as e:
            raise user_error(e, chosen["query"]) from None
        return feedback_message(entry, chosen["rank"])

    return handler


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
        ``css=CSS`` (``app_gradio.launch_settings`` does).
    """
    fields = list(service.filter_choices)
    can_train = service.can_train
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        last_search = gr.State(None)  # per visitor: the query (an uploaded file) and the results on show
        selected = gr.State(None)  # per visitor: the result clicked, with its query
        gr.Markdown(f"# {title}\nUpload, capture or paste an image: the most similar gallery images appear.")
        untrained_notice = gr.Markdown(
            UNTRAINED_NOTICE + (TRAIN_OFFER if can_train else ""), visible=service.untrained, elem_id="untrained-notice"
        )
        with gr.Row(equal_height=False):
            query_column = gr.Column(scale=1, min_width=280)
            results_column = gr.Column(scale=2, min_width=280)

        # ------------------------------------------------------------ the query (left; first on a phone)
        with query_column:
            query = gr.Image(
                sources=["upload", "webcam", "clipboard"],
                type="filepath",
                label="Query image",
                height=260,
                elem_id="query",
            )
            with gr.Row(equal_height=True):
                top_k = gr.Slider(
                    1, MAX_K, value=min(max(int(k), 1), MAX_K), step=1, label="Top-K", elem_id="k", scale=3
                )
                search_button = gr.Button("Search", variant="primary", elem_id="search", scale=1, min_width=90)
            with gr.Accordion("Filters and duplicates", open=False, elem_id="options"):
                filter_widgets = [
                    gr.Dropdown(choices=values, value=[], multiselect=True, label=field, elem_id=f"filter-{field}")
                    for field, values in service.filter_choices.items()
                ]
                collapse_box = gr.Checkbox(
                    value=True,
                    label="Merge near-duplicates",
                    info=f"a result at least {service.collapse:g} similar to a better one is counted in its caption",
                    elem_id="collapse",
                )

        # ------------------------------------------------------------ the results (right; second on a phone)
        with results_column:
            banner = gr.Markdown(visible=False, elem_id="no-match")
            results = gr.Gallery(
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
            with gr.Column(visible=False, elem_id="explain") as explain_box:
                gr.Markdown(EXPLAIN_HELP)
                gr.HTML(HEAT_LEGEND)
                explain_text = gr.Markdown(elem_id="explain-text")
                explain_note = gr.Markdown(elem_id="explain-note")
                with gr.Row():
                    images = [
                        gr.Image(
                            label=label,
                            interactive=False,
                            height=220,
                            format="png",
                            buttons=["fullscreen"],
                            elem_id=f"explain-{name}",
                        )
                        for name, label in (
                            ("query", "query"),
                            ("query-heat", "query heat map"),
                            ("result-heat", "result heat map"),
                            ("result", "result"),
                        )
                    ]
                if service.takes_feedback:
                    with gr.Row():
                        similar = gr.Button("Similar", elem_id="fb-similar", size="sm")
                        not_similar = gr.Button("Not similar", elem_id="fb-not-similar", size="sm")
                feedback_status = gr.Markdown(elem_id="feedback-status")

                if service.takes_feedback:
                    for button, verdict in ((similar, "similar"), (not_similar, "not_similar")):
                        button.click(
                            feedback_handler(service, verdict), [selected], [feedback_status], api_visibility="private"
                        )

            def show_explanation(last: dict | None, evt: gr.SelectData):
                if not last or evt.index is None or not 0 <= evt.index < len(last["shown"]):
                    raise gr.Error("search first, then click a result", print_exception=False)
                hit = last["shown"][evt.index]
                try:
                    e = service.explain(last["query"], hit["id"], rank=hit["rank"])
                except SimlibError as err:
                    raise user_error(err, last["query"]) from None
                shown = (e.query, e.query_heat, e.result_heat, e.result)
                return *shown, e.text, e.note, {**hit, "query": last["query"]}, gr.update(visible=True), ""

            results.select(
                show_explanation,
                inputs=[last_search],
                outputs=[*images, explain_text, explain_note, selected, explain_box, feedback_status],
                api_visibility="private",
            )
            with gr.Accordion("Results as JSON", open=False):
                details = gr.JSON(label="results")
            if can_train:
                with gr.Group(elem_id="train-box"):
                    gr.Markdown(TRAIN_HELP)
                    train_button = gr.Button("Train a model on this gallery", elem_id="train")
                    train_status = gr.Markdown(elem_id="train-status")

        # ------------------------------------------------------------ searching
        def run_search(image, k, *rest):
            *filter_values, collapse_on = rest
            try:
                path = uploaded_image(image)
                filters = make_filters(fields, filter_values)
                found = service.search(path, int(k), filters, service.collapse if collapse_on else None)
            except SimlibError as e:
                raise user_error(e, image) from None
            shown = [{"id": h.id, "rank": h.rank} for h in found.hits if h.path]
            last = {"query": path, "shown": shown, "banner": found.banner(), "note": found.calibration_note()}
            return *found.outputs(), last

        def search_if_image(image, k, *rest):
            """The automatic search: nothing to search after the image was cleared (no error)."""
            if image is None:
                return [], None, service.status(), None
            return run_search(image, k, *rest)

        def after_search(last: dict | None):
            banner_text = (last or {}).get("banner", "")
            note = (last or {}).get("note", service.calibration_note())
            return (
                gr.update(value=banner_text, visible=bool(banner_text)),
                gr.update(value=note, visible=bool(note)),
                gr.update(visible=False),
                None,
                "",
            )

        # The API names the parameters after the filters, not param_2, param_3...
        run_search = with_parameters(run_search, ["image", "k", *fields, "collapse"])
        search_inputs = [query, top_k, *filter_widgets, collapse_box]
        search_outputs = [results, details, status, last_search]
        after = {
            "fn": after_search,
            "inputs": [last_search],
            "outputs": [banner, calibration, explain_box, selected, feedback_status],
            "api_visibility": "private",
        }
        # The handler gets the upload as Gradio received it, undecoded: stock gr.Image opens it with
        # Pillow first, so a file that is not an image fails inside Gradio with a traceback. simlib
        # decodes instead (one path for gallery and queries: any mode, EXIF, pixel limit before
        # decoding) and a bad upload gets one clear message.
        auto = gr.on(
            # change: upload, webcam capture, paste, example click and clearing the image
            triggers=[query.change, top_k.change, *(w.change for w in filter_widgets), collapse_box.change],
            fn=search_if_image,
            inputs=search_inputs,
            outputs=search_outputs,
            preprocess=False,
            trigger_mode="always_last",  # one at a time per visitor; what changed meanwhile runs once after
            api_visibility="private",
            show_progress="minimal",
        )
        auto.success(**after)
        click = search_button.click(
            run_search,
            inputs=search_inputs,
            outputs=search_outputs,
            api_name="search",
            preprocess=False,
            cancels=[auto],  # an automatic search still queued is superseded by the click
        )
        click.success(**after)

        with query_column:
            if service.allow_add:
                add_button = gr.Button("Add this image to the gallery", elem_id="add")
                add_status = gr.Markdown(elem_id="add-status")

                def run_add(image):
                    try:
                        added = service.add(uploaded_image(image))
                    except SimlibError as e:
                        raise user_error(e, image) from None
                    return added.message, service.status()

                add_button.click(
                    run_add, inputs=[query], outputs=[add_status, status], api_name="add_to_gallery", preprocess=False
                )
        if service.examples:
            gr.Examples(examples=[[p] for p in service.examples], inputs=[query], label="Example queries")

        # ------------------------------------------------------------ training
        if can_train:

            def run_train(progress=gr.Progress()):  # noqa: B008 (Gradio's way to report progress)
                try:
                    outcome = service.train(progress=lambda fraction, text: progress(fraction, desc=text))
                except SimlibError as e:
                    raise gr.Error(str(e), print_exception=False) from None
                return outcome.message, service.status(), gr.update(visible=service.untrained), gr.update(visible=False)

            train_button.click(
                run_train,
                inputs=None,
                outputs=[train_status, status, untrained_notice, train_button],
                api_visibility="private",
                concurrency_limit=1,
            ).success(search_if_image, inputs=search_inputs, outputs=search_outputs, preprocess=False).success(**after)

        # ------------------------------------------------------------ API endpoints without a button
        def explain(image: FileData, result_id: int) -> tuple[FileData, FileData, dict]:
            """Both images' similarity heat maps (PNG) and ``{id, score, weak, label}`` of the result."""
            try:
                e = service.explain(uploaded_image(image), result_id)
            except SimlibError as err:
                raise user_error(err, image) from None
            return png_file(e.query_heat), png_file(e.result_heat), e.details()

        gr.api(explain, api_name="explain")

        if service.takes_feedback:

            def feedback(image: FileData, result_id: int, verdict: str) -> str:
                """Store "similar" or "not_similar" for a result of this query (kept as training data)."""
                try:
                    entry = service.feedback(uploaded_image(image), result_id, str(verdict))
                except SimlibError as e:
                    raise user_error(e, image) from None
                return feedback_message(entry)

            gr.api(feedback, api_name="feedback")
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo
