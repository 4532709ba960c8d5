"""A real photo folder: the scan (nested, links, hidden, junk) and decoding every kind a camera or phone writes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.messy import make_messy_folder
from simlib.data import decode, prepare_image
from simlib.data.scan import scan_folder
from simlib.errors import SimlibError
from tests.support.galleries import synthetic_image


def _sources(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` small PNGs: a coloured block on white (a product photo's layout), one colour per image."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = np.full((80, 60, 3), 255, np.uint8)
        img[15:65, 10:50] = synthetic_image(i, seed, size=(40, 50))
        path = folder / f"src{i}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    return make_messy_folder(root / "photos", _sources(root / "src", 24), seed=3, side=(300, 400))


def test_the_scan_finds_every_planted_image_once_and_skips_each_hostile_entry_with_its_reason(messy):
    scan = scan_folder(messy.root)
    found = {f.path for f in scan.files}
    decodable_junk = {p for p, what in messy.hostile.items() if what in ("not an image", "truncated")}
    assert found == set(messy.images) | decodable_junk  # named like images: decoding rejects them, with a reason
    for path, what in messy.hostile.items():
        if path not in decodable_junk:
            assert what in scan.skipped[path], (path, scan.skipped.get(path))
    assert [f.rel for f in scan.files] == sorted(f.rel for f in scan.files)
    assert scan_folder(messy.root) == scan  # stable: an unchanged folder scans the same


def test_every_image_kind_decodes_upright_and_close_to_its_source(messy):
    sources = sorted({i for _, i in messy.images.values()})
    kinds_seen = set()
    for path, (kind, i) in messy.images.items():
        if messy.copy_kind.get(path, "exact") != "exact":  # near-copies are made from the decoded original
            continue
        got = prepare_image(path, 32).astype(float)
        want = prepare_image(messy_source(messy, i), 32).astype(float)
        # a rotated, CMYK or grey copy that came out wrong differs by far more than JPEG noise
        assert np.abs(got - want).mean() < (40 if kind == "gray16" else 12), (kind, path)
        kinds_seen.add(kind)
    assert {"jpeg", "jpeg_exif", "png_alpha", "cmyk", "gray16", "gif_anim", "webp_anim"} <= kinds_seen
    assert len(sources) == 24


def messy_source(messy, i: int) -> str:
    return str(messy.root.parent / "src" / f"src{i}.png")


def test_junk_named_as_images_fails_with_a_reason_not_a_crash(messy):
    for path, what in messy.hostile.items():
        if what in ("not an image", "truncated"):
            with pytest.raises(SimlibError, match=r"not an image|truncated"):
                prepare_image(path, 32)


def test_a_symlinked_folder_is_followed_once_and_a_loop_is_cut(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    Image.fromarray(synthetic_image(1, 0)).save(real / "a.png")
    top = tmp_path / "top"
    top.mkdir()
    (top / "link").symlink_to(real, target_is_directory=True)
    (real / "back").symlink_to(top, target_is_directory=True)
    scan = scan_folder(top)
    assert [f.rel for f in scan.files] == ["link/a.png"]
    assert [f.path for f in scan.files] == [str((real / "a.png").resolve())]
    assert "loop" in scan.skipped[str(top / "link" / "back")]


def test_an_unreadable_file_is_skipped_with_permission_denied(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "secret.jpg"
    Image.fromarray(synthetic_image(1, 0)).save(path)
    path.chmod(0)
    assert scan_folder(tmp_path).skipped[str(path)] == "permission denied"


def _camera_jpeg(side=(4000, 3000)) -> bytes:
    y, x = np.mgrid[0 : side[1], 0 : side[0]]
    img = np.stack([(x * 255 // side[0]), (y * 255 // side[1]), ((x + y) % 256)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_a_camera_jpeg_is_decoded_at_a_reduced_size_and_resizes_like_the_full_decode():
    data = _camera_jpeg()
    reduced = decode.open_image(data, reduce_to=128)
    assert reduced.size == (250, 188)  # DCT scaling to 1/8 (500x375), then halved; never the full 4000x3000
    full = decode.resize_image(decode.open_image(data), 64)
    fast = prepare_image(data, 64)
    assert np.abs(full.astype(float) - fast).mean() < 2.0


def test_a_camera_mpo_file_is_decoded_at_a_reduced_size_too():
    first = Image.open(io.BytesIO(_camera_jpeg()))
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[first.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    img = Image.open(io.BytesIO(buf.getvalue()))
    assert img.format == "MPO" and getattr(img, "n_frames", 1) == 2
    # the decoder's 1/8 scale (500x375), then halved: a full decode and reduce would give 174x131
    assert decode.open_image(buf.getvalue(), reduce_to=128).size == (250, 188)


def test_the_pixel_limit_is_checked_before_a_reduced_decode(monkeypatch):
    monkeypatch.setattr(decode, "MAX_PIXELS", 1_000_000)
    with pytest.raises(SimlibError, match="pixel limit"):
        decode.open_image(_camera_jpeg((2000, 1000)), max_pixels=1_000_000, reduce_to=64)


def test_heic_reads_through_pillow_heif_or_is_skipped_with_a_clear_reason(tmp_path, monkeypatch):
    path = tmp_path / "phone.heic"
    if decode.heif_available():
        Image.fromarray(synthetic_image(2, 0)).save(path, "HEIF", quality=95)
        assert prepare_image(path, 32).shape == (32, 32, 3)
    else:
        path.write_bytes(b"\0\0\0\x18ftypheic")
    monkeypatch.setattr(decode, "_heif", [False])
    with pytest.raises(SimlibError, match="pillow-heif"):
        prepare_image(path, 32)
