import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simlib.data import (
    DecodeErrors,
    ImageTable,
    image_pipeline,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
    load_product_set,
    materialize,
    open_image,
    prepare_image,
    resize_image,
    split_table,
)
from simlib.errors import SimlibError
from tests.support.galleries import labelled_folder, synthetic_image


# ----------------------------------------------------------------------------- loaders
@pytest.mark.integration  # reads $SIMLIB_DATA
def test_product_set_loads_the_kaggle_layout(product_table, product_dir):
    t = product_table
    assert len(t) == 4888
    assert len(set(t.labels)) == 47
    assert len(set(t.ids.tolist())) == len(t)
    assert list(t.ids) == sorted(t.ids)
    assert t.paths[0] == str(product_dir / "images" / f"{t.ids[0]}.jpg")
    assert {"gender", "baseColour", "masterCategory", "productDisplayName"} <= set(t.attrs(0))
    assert "articleType" not in t.attrs(0) and "id" not in t.attrs(0)


@pytest.mark.integration  # reads $SIMLIB_DATA
def test_product_set_label_column_is_selectable(product_dir):
    t = load_product_set(product_dir, label_column="masterCategory")
    assert "Apparel" in set(t.labels)
    assert "articleType" in t.attrs(0)
    with pytest.raises(SimlibError, match="no column 'colour'"):
        load_product_set(product_dir, label_column="colour")


@pytest.mark.integration  # reads $SIMLIB_DATA
def test_product_set_tolerates_unquoted_commas_and_missing_images(tmp_path, product_dir):
    (tmp_path / "images").mkdir()
    src = sorted((product_dir / "images").iterdir())[:2]
    for p in src:
        shutil.copy(p, tmp_path / "images" / p.name)
    ids = [p.stem for p in src]
    (tmp_path / "styles.csv").write_text(
        "id,gender,articleType,productDisplayName\n"
        f"{ids[0]},Men,Tshirts,Puma Men, Blue, T-shirt\n"
        f"{ids[1]},Women,Tops,Plain top\n"
        "999999,Men,Shoes,no image for this row\n"
    )
    t = load_dataset(tmp_path)
    assert len(t) == 2
    row = list(t.ids).index(int(ids[0]))
    assert t.attrs(row)["productDisplayName"] == "Puma Men, Blue, T-shirt"


def test_image_folder_with_and_without_class_subfolders(tmp_path):
    images = [synthetic_image(label, seed) for label, seed in ((0, 0), (0, 1), (1, 0))]
    labelled_folder(tmp_path / "lab", list(zip(["boots", "boots", "hats"], images, strict=True)), ext=".jpg")
    (tmp_path / "flat").mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / "flat" / f"{i}.JPG", "JPEG")  # upper-case extensions count too
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    labelled = load_image_folder(tmp_path / "lab")
    assert list(labelled.labels) == ["boots", "boots", "hats"]
    flat = load_dataset(tmp_path / "flat")
    assert flat.labels is None and len(flat) == 3


def test_loader_errors_are_clear(tmp_path):
    with pytest.raises(SimlibError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SimlibError, match="no images"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(SimlibError, match="is a file"):
        load_dataset(tmp_path / "file.jpg")


@pytest.mark.integration  # reads $SIMLIB_DATA
def test_fashion_mnist_through_keras_datasets(data_root, tmp_path):
    t = load_fashion_mnist("test")
    assert len(t) == 10_000 and t.arrays.shape == (10_000, 28, 28)
    assert len(set(t.labels)) == 10
    small = materialize(t.subset(np.arange(12)), tmp_path / "fm")
    assert small.arrays is None and len(small.paths) == 12
    assert np.array_equal(np.asarray(Image.open(small.paths[3])), t.arrays[3])


# ----------------------------------------------------------------------------- splits
@pytest.mark.integration  # reads $SIMLIB_DATA
def test_image_split_is_deterministic_disjoint_and_stratified(product_table):
    a = split_table(product_table, seed=0)
    b = split_table(product_table, seed=0)
    c = split_table(product_table, seed=1)
    assert all(np.array_equal(a[k].ids, b[k].ids) for k in a)
    assert not np.array_equal(a["test"].ids, c["test"].ids)
    ids = [set(a[k].ids.tolist()) for k in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == len(product_table)
    assert set(a["test"].labels) == set(a["train"].labels) == set(product_table.labels)
    assert len(a["test"]) == pytest.approx(0.3 * len(product_table), rel=0.02)


@pytest.mark.integration  # reads $SIMLIB_DATA
def test_class_split_keeps_classes_apart(product_table):
    s = split_table(product_table, seed=0, by="class")
    train, val, test = (set(s[k].labels) for k in ("train", "val", "test"))
    assert not (train & test or train & val or val & test)
    assert len(test) == round(0.3 * 47)


def test_class_split_needs_labels():
    t = ImageTable(ids=np.arange(3), arrays=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(SimlibError, match="needs labels"):
        split_table(t, by="class")


# ----------------------------------------------------------------------------- decoding
def _png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1", "RGB"])
def test_open_image_returns_rgb_for_every_mode(mode):
    img = Image.new(mode, (7, 5))
    out = open_image(img)
    assert out.mode == "RGB" and out.size == (7, 5)


def test_transparency_is_composited_on_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert np.asarray(open_image(img)).min() == 255


def test_sixteen_bit_grey_keeps_its_range():
    a = np.linspace(0, 65535, 16, dtype=np.uint16).reshape(4, 4)
    out = np.asarray(open_image(Image.fromarray(a, "I;16")))
    assert out.min() == 0 and out.max() == 255


def test_exif_orientation_is_applied():
    upright = Image.new("RGB", (8, 4), (255, 255, 255))
    upright.paste((255, 0, 0), (0, 0, 4, 4))  # red on the left half
    rotated = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = open_image(_png_bytes(rotated, "JPEG", exif=exif, quality=100))
    assert out.size == (8, 4)
    left, right = np.asarray(out)[:, :4].mean(axis=(0, 1)), np.asarray(out)[:, 4:].mean(axis=(0, 1))
    assert left[0] > 200 and left[1] < 60 and right.min() > 200


def test_gif_first_frame_and_arrays():
    frames = [Image.new("P", (5, 5), i) for i in (0, 1)]
    data = _png_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert open_image(data).size == (5, 5)
    assert open_image(np.zeros((3, 4), np.float32)).size == (4, 3)
    assert open_image(np.ones((3, 4, 1), np.float64)).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(SimlibError, match="image array"):
        open_image(np.zeros((3, 4, 2), np.uint8))


def test_bad_inputs_raise_simlib_errors(tmp_path):
    (tmp_path / "text.jpg").write_text("hello")
    good = _png_bytes(Image.new("RGB", (50, 50)), "JPEG")
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    for path, match in [
        (tmp_path / "missing.jpg", "no such file"),
        (tmp_path / "text.jpg", "not an image"),
        (tmp_path / "cut.jpg", "corrupt"),
        (tmp_path, "folder"),
    ]:
        with pytest.raises(SimlibError, match=match):
            open_image(path)


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(SimlibError, match="pixel limit"):
        open_image(_png_bytes(Image.new("1", (3000, 3000))), max_pixels=1_000_000)


def test_resize_pad_keeps_aspect_and_crop_fills():
    img = Image.new("RGB", (60, 80), (0, 0, 0))
    pad = resize_image(img, 32, "pad")
    crop = resize_image(img, 32, "crop")
    assert pad.shape == crop.shape == (32, 32, 3) and pad.dtype == np.uint8
    assert pad[:, 0].min() == 255 and pad[16, 16].max() == 0  # white side bars, black content
    assert crop.max() == 0
    with pytest.raises(SimlibError):
        resize_image(img, 32, "stretch")


@pytest.mark.integration  # reads $SIMLIB_DATA
def test_prepare_image_is_the_same_for_path_bytes_and_pil(product_table):
    path = product_table.paths[0]
    a = prepare_image(path, 48)
    b = prepare_image(Path(path).read_bytes(), 48)
    c = prepare_image(Image.open(path), 48)
    assert np.array_equal(a, b) and np.array_equal(a, c)


# ----------------------------------------------------------------------------- pipeline
@pytest.mark.integration  # reads $SIMLIB_DATA
def test_pipeline_decodes_in_order_and_reports_bad_rows(tmp_path, product_table):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    paths = (*product_table.paths[:5], str(tmp_path / "broken.jpg"), product_table.paths[5])
    table = ImageTable(ids=np.arange(7), paths=paths)
    errors = DecodeErrors()
    batches = list(image_pipeline(table, 32, batch_size=3, errors=errors).as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    rows = np.concatenate([b[1] for b in batches])
    ok = np.concatenate([b[2] for b in batches])
    assert rows.tolist() == list(range(7))
    assert ok.tolist() == [True] * 5 + [False, True]
    assert list(errors.reasons) == [5] and "broken.jpg" in errors.reasons[5]
    assert np.array_equal(images[6], prepare_image(paths[6], 32))


@pytest.mark.integration  # reads $SIMLIB_DATA
def test_sample_per_class_takes_the_largest_classes(product_table):
    from simlib.data import sample_per_class

    sub = sample_per_class(product_table, 5, 4, seed=0)
    values, counts = np.unique(product_table.labels.astype(str), return_counts=True)
    largest = set(values[np.argsort(-counts, kind="stable")[:5]])
    assert len(sub) == 20 and set(sub.labels) == largest
    assert np.array_equal(sample_per_class(product_table, 5, 4, seed=0).ids, sub.ids)
    assert list(sub.ids) == sorted(sub.ids)
