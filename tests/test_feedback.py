"""Feedback: atomic appends from many threads, query images by content, triplets for training."""

import json
import threading

import numpy as np
import pytest
from PIL import Image

from simlib.errors import SimlibError
from simlib.search import Hit
from simlib.search.feedback import FEEDBACK_FILE, FeedbackStore, feedback_triplets, read_feedback


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (20, 16, 3)).astype(np.uint8)


@pytest.mark.integration  # reads $SIMLIB_DATA
def test_round_trip_and_query_images_stored_once_by_content(tmp_path, small_table):
    store = FeedbackStore(tmp_path / "fb")
    hit = Hit(1, int(small_table.ids[0]), 0.91, small_table.paths[0], small_table.label(0), {})
    a = store.add_hit(_image(0), hit, "similar", model_fingerprint="abc")
    b = store.add(_image(0).copy(), int(small_table.ids[1]), "not_similar", small_table.paths[1])
    store.add(_image(1), int(small_table.ids[2]), "similar", small_table.paths[2])
    assert a.query == b.query and len(list((tmp_path / "fb" / "queries").iterdir())) == 2
    back = store.read()
    assert back[0] == a and back[1] == b and len(back) == 3
    assert back[0].score == pytest.approx(0.91) and back[0].model_fingerprint == "abc"
    assert np.array_equal(np.asarray(Image.open(a.query)), _image(0))
    with pytest.raises(SimlibError, match="verdict"):
        store.add(_image(0), 1, "maybe")


def test_torn_last_line_is_skipped(tmp_path):
    store = FeedbackStore(tmp_path)
    store.add(_image(0), 7, "similar", "/x/7.jpg")
    with open(tmp_path / FEEDBACK_FILE, "a") as f:
        f.write('{"query": "/q.png", "result_id": 8, "verdi')  # a crash mid-line
    assert [e.result_id for e in read_feedback(tmp_path)] == [7]
    with pytest.raises(SimlibError, match="no feedback"):
        read_feedback(tmp_path / "elsewhere")


def test_concurrent_appends_from_threads_lose_nothing(tmp_path):
    store = FeedbackStore(tmp_path)
    queries = [_image(s) for s in range(4)]
    n_threads, per_thread = 8, 40

    def work(t: int) -> None:
        for n in range(per_thread):
            store.add(queries[n % 4], t * 1000 + n, "similar" if n % 2 else "not_similar", f"/g/{t}/{n}.jpg")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    lines = (tmp_path / FEEDBACK_FILE).read_text().splitlines()
    assert len(lines) == n_threads * per_thread
    assert all(json.loads(line)["verdict"] in ("similar", "not_similar") for line in lines)  # none interleaved
    assert sorted(e.result_id for e in read_feedback(tmp_path)) == sorted(
        t * 1000 + n for t in range(n_threads) for n in range(per_thread)
    )


def test_triplets_pair_positives_with_hard_negatives(tmp_path):
    store = FeedbackStore(tmp_path)
    q0 = str(store.save_query(_image(0)))
    q1 = str(store.save_query(_image(1)))
    store.add(_image(0), 1, "similar", "/g/1.jpg", model_fingerprint="m1")
    store.add(_image(0), 2, "not_similar", "/g/2.jpg", model_fingerprint="m1")
    store.add(_image(0), 3, "not_similar", "/g/3.jpg", model_fingerprint="m1")
    store.add(_image(0), 4, "similar", "/g/4.jpg", model_fingerprint="m1")
    store.add(_image(0), 4, "not_similar", "/g/4.jpg", model_fingerprint="m2")  # the user changed their mind
    store.add(_image(1), 5, "not_similar", "/g/5.jpg", model_fingerprint="m2")
    store.add(_image(1), 6, "similar", None)  # no path: cannot train on it
    triplets = feedback_triplets(tmp_path)
    assert triplets == sorted(
        [
            (q0, "/g/1.jpg", "/g/2.jpg"),
            (q0, "/g/1.jpg", "/g/3.jpg"),
            (q0, "/g/1.jpg", "/g/4.jpg"),
            (q1, None, "/g/5.jpg"),
        ]
    )  # sorted by anchor
    only_m1 = feedback_triplets(read_feedback(tmp_path), model_fingerprint="m1")
    assert sorted(only_m1) == sorted([(q0, "/g/1.jpg", "/g/2.jpg"), (q0, "/g/4.jpg", "/g/3.jpg")])
