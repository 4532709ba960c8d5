"""What a visitor sees of the server: gallery paths relative to the gallery's root, and a heat-map colour bar
true to the maps shown. Fast tier: no model."""

import numpy as np
import pytest

from simlib.app.results import gallery_roots, hit_record, visitor_path
from simlib.app.style import heat_legend
from simlib.search import Hit
from simlib.search.explain import heat_colours, overlay


def test_gallery_paths_are_relative_to_the_gallery_root(tmp_path):
    gallery, uploads = tmp_path / "data" / "gallery", tmp_path / "artifacts" / "gallery_uploads"
    folders = [gallery / "Shirts", gallery / "Bags", uploads]
    roots = gallery_roots(folders, uploads)
    assert roots == ((str(uploads.resolve()), "gallery_uploads/"), (str(gallery.resolve()), ""))
    assert visitor_path(str(gallery.resolve() / "Bags" / "1.jpg"), roots) == "Bags/1.jpg"
    assert visitor_path(str(uploads.resolve() / "ab.png"), roots) == "gallery_uploads/ab.png"
    assert visitor_path("/elsewhere/secret/x.jpg", roots) == "x.jpg" and visitor_path(None, roots) is None
    # one folder: its images by name
    one = gallery_roots([gallery / "images"])
    assert visitor_path(str(gallery.resolve() / "images" / "7.jpg"), one) == "7.jpg"
    hit = Hit(1, 3, 0.9, str(gallery.resolve() / "Shirts" / "3.jpg"), "Shirts", {})
    record = hit_record(hit, roots)
    assert record["gallery_path"] == "Shirts/3.jpg" and "path" not in record
    assert str(tmp_path) not in str(record)


def test_the_colour_bar_spans_the_colours_the_maps_use():
    # the overlay paints heat h with jet(h): a bar over [low, 1] starts at the least matching part's colour
    colours = heat_colours(0.55, 1.0, n=5)
    white = np.full((4, 4, 3), 255, np.uint8)
    painted = overlay(white, np.full((4, 4), 0.55, np.float32), alpha=1.0)  # at alpha 1 a heat's own colour shows
    start = tuple(int(colours[0][i : i + 2], 16) for i in (1, 3, 5))
    blend = 0.3 + 0.7 * 0.55  # the overlay's opacity at that heat
    expected = np.clip((1 - blend) * 255 + blend * np.asarray(start), 0, 255)
    np.testing.assert_allclose(painted[0, 0], expected, atol=1.5)
    assert colours[-1] == "#800000" and heat_colours()[0] == "#000080"  # jet's ends (dark red, dark blue)
    html = heat_legend(colours, 0.55)
    assert "linear-gradient(to right, " + ", ".join(colours) + ")" in html and "55% of the strongest" in html
    assert "#000080" not in html and "#0000ff" not in html  # no blue the maps never show


@pytest.mark.parametrize("low", [0.0, 0.5, 0.9])
def test_heat_colours_are_hex(low):
    colours = heat_colours(low, 1.0)
    assert len(colours) == 9 and all(len(c) == 7 and c.startswith("#") for c in colours)
