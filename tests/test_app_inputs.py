"""simlib.app.inputs: what a request sends, checked before the service sees it (fast tier)."""

from __future__ import annotations

import pytest

from simlib.app.inputs import uploaded_image, user_message
from simlib.errors import SimlibError


def test_uploaded_image_only_from_the_upload_folder(tmp_path):
    upload = tmp_path / "upload" / "abc" / "query.jpg"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"jpeg")
    folder = tmp_path / "upload"
    assert uploaded_image(None) is None
    assert uploaded_image({"path": str(upload), "orig_name": "query.jpg"}, folder) == str(upload)
    assert uploaded_image({"url": "data:image/png;base64,aGk=", "path": None}, folder) == b"hi"
    for payload in ({"path": "/etc/passwd"}, {"path": str(folder / ".." / "x.jpg")}, "/etc/passwd", {"path": None}):
        with pytest.raises(SimlibError, match="must be uploaded"):
            uploaded_image(payload, folder)
    with pytest.raises(SimlibError, match="base64"):
        uploaded_image({"url": "data:image/png;base64,!!"}, folder)


def test_user_message_names_an_upload_by_its_own_name(tmp_path):
    upload = tmp_path / "abc" / "notes.jpg"
    error = SimlibError(f"{upload}: not an image (cannot identify image file)")
    assert user_message(error, str(upload)) == "notes.jpg: not an image (cannot identify image file)"
    assert user_message(error, {"path": str(upload)}).startswith("notes.jpg: not an image")
