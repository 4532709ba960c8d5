"""The page's words and look: title, notices, help texts, the heat-map legend and the CSS."""

TITLE = "simlib: find similar images"
UNTRAINED_NOTICE = (
    "**This demo's model is untrained**: results follow colours and rough shapes, not what the objects are."
)
# For whoever runs the demo (folded under the notice): how to serve a better model.
UNTRAINED_HOWTO = (
    "The backbone has random weights: no ImageNet weights could be loaded and no trained model was found. "
    "Train one in the course (notebook 03 saves `artifacts/course/model_labels`, which the app then picks up) "
    "or with `simlib train --out artifacts/model`, or start the app where it can download the ImageNet weights."
)
TRAIN_OFFER = " Or train one right here: **Train a model on this gallery**, below the results."
TRAIN_HELP = (
    "### Train a model on this gallery\nTrains a small head on this gallery's labels (and on the verdicts "
    "given here) over the frozen backbone: first the backbone's features of every image, then at most two "
    "minutes of epochs; then the gallery is re-indexed and re-calibrated with the new model, which the app "
    "serves without a restart if it does better than this one. Progress shows below the button."
)
EXPLAIN_HELP = "### Why are they similar?"


def heat_legend(colours: list[str], low: float = 0.0) -> str:
    """The colour bar of one pair's heat maps: ``colours`` from the least to the most matching part as
    :func:`simlib.search.explain.overlay` paints them (:func:`simlib.search.explain.heat_colours` over the range
    the two maps span), and ``low``: the least matching part's heat, as a share of the strongest."""
    stops = ", ".join(colours)
    return (
        f'<div id="heat-legend"><span>least ({low:.0%} of the strongest)</span>'
        f'<span class="heat-bar" style="background: linear-gradient(to right, {stops})"></span><span>most</span></div>'
        '<p id="heat-guide">How to read it: the reddest parts of each image are the ones whose features best '
        "match the other image; the bar runs over the colours these two maps use, from their least matching part "
        "to their best. Colours compare regions within one pair only.</p>"
    )


# Before any result is clicked (the explanation is hidden then): Matplotlib's "jet" from 0 to 1.
HEAT_LEGEND = heat_legend(
    ["#00007f", "#0000ff", "#007fff", "#00ffff", "#7fff7f", "#ffff00", "#ff7f00", "#ff0000", "#7f0000"]
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
#heat-legend .heat-bar { flex: 1; max-width: 320px; height: 12px; border-radius: 3px; }
#heat-guide { font-size: var(--text-sm); margin: 4px 0 0 0; }
/* The results box is as tall as its tiles (Gradio's gallery keeps a tall empty area otherwise). */
#results .grid-wrap, #results .grid-wrap.fixed-height { min-height: 0 !important; max-height: none !important;
  height: auto !important; overflow: visible !important; }
#results { min-height: 0 !important; height: auto !important; }
/* The clicked tile is marked by its border, not by a greyed caption that looks disabled. */
#results .thumbnail-item.selected .caption-label { color: var(--body-text-color) !important; opacity: 1 !important; }
#train { font-weight: 600; }
@media (max-width: 640px) {
  .gradio-container { padding-left: 6px !important; padding-right: 6px !important; max-width: 100vw !important; }
  #query .image-container, #query .upload-container { max-height: 200px; }
  body { overflow-x: hidden; }
}
"""
