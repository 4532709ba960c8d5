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
    "loaded and no trained model was given), so results follow colours and rough shapes, not what the "
    "objects are. Train a model in the course (or `simlib train`) and start the app with `--model DIR`, "
    "or use `--weights imagenet` on a machine that can download them."
)
EXPLAIN_HELP = (
    "### Why are they similar?\nThe heat maps mark the regions of each image whose features "
    "match the other image (red: most, blue: least)."
)


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

    Args:
        service: the gallery service (its ``takes_feedback`` and ``allow_add`` decide the feedback
            buttons and the "Add to gallery" button and endpoints).
        k: the Top-K slider's starting value.
        title: the page title.

    Returns:
        A ``gr.Blocks`` with its queue set (see the module docstring for its API).
    """
    fields = list(service.filter_choices)
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        last_search = gr.State(None)  # per visitor: the query (an uploaded file) and the results on show
        selected = gr.State(None)  # per visitor: the result clicked, with its query
        gr.Markdown(f"# {title}\nUpload, capture or paste an image: the app shows the most similar gallery images.")
        if service.untrained:
            gr.Markdown(UNTRAINED_NOTICE, elem_id="untrained-notice")
        with gr.Row():
            query_column = gr.Column(scale=1)
            results_column = gr.Column(scale=2)

        # ------------------------------------------------------------ the results (right)
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
            status = gr.Markdown(service.status(), label="status", elem_id="status")
            with gr.Column(visible=False, elem_id="explain") as explain_box:
                gr.Markdown(EXPLAIN_HELP)
                explain_text = gr.Markdown(elem_id="explain-text")
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
                return *shown, e.text, {**hit, "query": last["query"]}, gr.update(visible=True), ""

            results.select(
                show_explanation,
                inputs=[last_search],
                outputs=[*images, explain_text, selected, explain_box, feedback_status],
                api_visibility="private",
            )
            with gr.Accordion("Results as JSON", open=False):
                details = gr.JSON(label="results")

        # ------------------------------------------------------------ the query (left)
        with query_column:
            query = gr.Image(
                sources=["upload", "webcam", "clipboard"],
                type="filepath",
                label="Query image",
                height=280,
                elem_id="query",
            )
            top_k = gr.Slider(1, MAX_K, value=min(max(int(k), 1), MAX_K), step=1, label="Top-K", elem_id="k")
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
            search_button = gr.Button("Search", variant="primary", elem_id="search")

            def run_search(image, k, *rest):
                *filter_values, collapse_on = rest
                try:
                    path = uploaded_image(image)
                    filters = make_filters(fields, filter_values)
                    found = service.search(path, int(k), filters, service.collapse if collapse_on else None)
                except SimlibError as e:
                    raise user_error(e, image) from None
                shown = [{"id": h.id, "rank": h.rank} for h in found.hits if h.path]
                return *found.outputs(), {"query": path, "shown": shown, "banner": found.banner()}

            def after_search(last: dict):
                banner_text = last["banner"]
                return gr.update(value=banner_text, visible=bool(banner_text)), gr.update(visible=False), None, ""

            # The API names the parameters after the filters, not param_2, param_3...
            run_search = with_parameters(run_search, ["image", "k", *fields, "collapse"])
            search_inputs = [query, top_k, *filter_widgets, collapse_box]
            search_button.click(
                run_search,
                inputs=search_inputs,
                outputs=[results, details, status, last_search],
                api_name="search",
                # The handler gets the upload as Gradio received it, undecoded: stock gr.Image opens it with
                # Pillow first, so a file that is not an image fails inside Gradio with a traceback. simlib
                # decodes instead (one path for gallery and queries: any mode, EXIF, pixel limit before
                # decoding) and a bad upload gets one clear message.
                preprocess=False,
            ).success(
                after_search,
                inputs=[last_search],
                outputs=[banner, explain_box, selected, feedback_status],
                api_visibility="private",
            )
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
