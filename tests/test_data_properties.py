"""Property-based tests (hypothesis) of the decode/resize path: any size, mode or dtype in,
a (S, S, 3) uint8 array or a SimlibError out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from simlib.errors import SimlibError

pytestmark = pytest.mark.hostile

MODES = ("L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "1")
# A dark colour in each mode: the image content that white padding must not touch.
DARK = {"L": 0, "LA": (0, 255), "P": 0, "RGB": (0, 0, 0), "RGBA": (0, 0, 0, 255), "CMYK": (0, 0, 0, 255)}
DARK.update({"I;16": 0, "I": 0, "F": 0.0, "1": 0})
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

sizes = st.integers(min_value=1, max_value=300)
out_sizes = st.sampled_from([1, 7, 32, 64])


def _content_box(a: np.ndarray) -> tuple[int, int]:
    """Width and height of the non-white part of a padded image."""
    rows = np.flatnonzero((a < 250).any(axis=(1, 2)))
    cols = np.flatnonzero((a < 250).any(axis=(0, 2)))
    return (cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1) if len(rows) else (0, 0)


@SETTINGS
@given(mode=st.sampled_from(MODES), w=sizes, h=sizes, size=out_sizes, resize=st.sampled_from(["pad", "crop"]))
def test_any_mode_and_size_gives_square_rgb(mode, w, h, size, resize):
    from simlib.data import open_image, prepare_image, resize_image

    img = Image.new(mode, (w, h), DARK[mode])
    out = prepare_image(img, size, resize)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    # resize_image alone takes any mode too
    assert resize_image(img, size, resize).shape == (size, size, 3)
    assert open_image(img).mode == "RGB"
    if resize == "pad":
        cw, ch = _content_box(out)
        scale = size / max(w, h)
        # the dark content keeps the aspect ratio: each side within a pixel of the exact scaled side
        assert abs(cw - max(1.0, w * scale)) <= 1.5 and abs(ch - max(1.0, h * scale)) <= 1.5, (cw, ch)
    else:
        assert (out < 250).all()  # crop fills the square: no padding


@SETTINGS
@given(mode=st.sampled_from(["L", "LA", "P", "RGB", "RGBA", "I;16", "1"]), w=sizes, h=sizes)
def test_encoded_png_round_trip(mode, w, h):
    from simlib.data import prepare_image

    buf = io.BytesIO()
    Image.new(mode, (w, h), DARK[mode]).save(buf, "PNG")
    assert prepare_image(buf.getvalue(), 32).shape == (32, 32, 3)


DTYPES = (np.uint8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_)


@SETTINGS
@given(
    dtype=st.sampled_from(DTYPES),
    w=st.integers(1, 120),
    h=st.integers(1, 120),
    channels=st.sampled_from([None, 1, 3, 4]),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1.0, 255.0, 65535.0, -3.0]),
)
def test_any_array_gives_square_rgb(dtype, w, h, channels, seed, scale):
    from simlib.data import prepare_image

    rng = np.random.default_rng(seed)
    shape = (h, w) if channels is None else (h, w, channels)
    with np.errstate(over="ignore", invalid="ignore"):
        a = (rng.random(shape) * scale).astype(dtype)  # float16 overflows to inf at 65535
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        with pytest.raises(SimlibError, match="NaN or infinite"):
            prepare_image(a, 32)
        return
    out = prepare_image(a, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


@SETTINGS
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.builds(lambda n, junk: _png_prefix()[:n] + junk, st.integers(0, 200), st.binary(max_size=50)),
    )
)
def test_random_bytes_never_crash(data):
    from simlib.data import prepare_image

    try:
        out = prepare_image(data, 16)
    except SimlibError as e:
        assert str(e)
    else:
        assert out.shape == (16, 16, 3)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((0, 5, 3), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((2, 3, 4, 3), np.uint8),
        np.zeros(7, np.uint8),
        np.full((4, 4), np.nan),
        np.full((4, 4, 3), np.inf, np.float32),
        np.zeros((4, 4), np.complex64),
        np.array([["a", "b"]]),
        None,
        42,
    ],
    ids=["empty", "2ch", "5ch", "4d", "1d", "nan", "inf", "complex", "str", "none", "int"],
)
def test_bad_arrays_and_objects_raise_simlib_error(bad):
    from simlib.data import prepare_image

    with pytest.raises(SimlibError):
        prepare_image(bad, 32)


def test_bad_sizes_and_modes_raise_simlib_error():
    from simlib.data import prepare_image

    img = Image.new("RGB", (4, 4))
    for size, mode in ((0, "pad"), (-1, "crop"), (32, "stretch")):
        with pytest.raises(SimlibError):
            prepare_image(img, size, mode)


def _png_prefix() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (0, 0, 0)).save(buf, "PNG")
    return buf.getvalue()
