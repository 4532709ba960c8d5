"""Duplicate collapse, "weak" hits and the incremental gallery of Searcher."""

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from simlib.data import ImageTable, load_image_folder
from simlib.index import Threshold, VectorIndex
from simlib.search import Searcher, no_good_match
from tests.support.galleries import labelled_folder, table_items

pytestmark = pytest.mark.integration  # real images through a ResNet50


@pytest.fixture(scope="module")
def copies_gallery(tmp_path_factory, small_table):
    """16 real images plus, for 4 of them, an exact copy and a re-encoded copy (JPEG 60, resized 90 %)."""
    root = tmp_path_factory.mktemp("copies")
    originals = [small_table.paths[i] for i in range(0, 48, 3)]
    for n, src in enumerate(originals):
        shutil.copy(src, root / f"{n:02d}.jpg")
    for n in range(4):
        shutil.copy(originals[n], root / f"{n:02d}_exact.jpg")
        img = Image.open(originals[n]).convert("RGB")
        img = img.resize((round(img.width * 0.9), round(img.height * 0.9)), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=60)
        (root / f"{n:02d}_reencoded.jpg").write_bytes(buf.getvalue())
    return root


def greedy_distinct(vectors: np.ndarray, order: np.ndarray, k: int, threshold: float):
    """Brute-force reference: walk the whole ranking, keep an item unless it is a near-copy of a kept one."""
    kept, dups = [], []
    for i in order:
        near = [n for n, j in enumerate(kept) if vectors[i] @ vectors[j] >= threshold]
        if near:
            dups[near[0]] += 1
            continue
        kept.append(int(i))
        dups.append(0)
        if len(kept) == k:
            break
    return kept, dups


def test_collapse_merges_exact_and_reencoded_copies(tiny_model, copies_gallery):
    table = load_image_folder(copies_gallery)
    searcher, _ = Searcher.from_table(tiny_model, table, progress=False)
    query = str(copies_gallery / "00.jpg")
    plain = searcher.query(query, k=3)
    names = sorted(h.path.rsplit("/", 1)[1] for h in plain)
    assert names == ["00.jpg", "00_exact.jpg", "00_reencoded.jpg"]  # the problem: copies fill the top-3
    assert all(h.duplicates == 0 for h in plain)

    # an untrained 32 px model puts every image above 0.93: take the loosest copy pair as the threshold
    vectors, ids = searcher.index.vectors(), searcher.index.ids
    names = [r.path.rsplit("/", 1)[1] for r in searcher.index.records()]
    group = np.asarray([n[:2] for n in names])
    copy_pairs = (group[:, None] == group[None, :]) & ~np.eye(len(names), dtype=bool)
    threshold = float((vectors @ vectors.T)[copy_pairs].min()) - 1e-6

    hits = searcher.query(query, k=3, collapse_duplicates=threshold)
    assert len(hits) == 3 and [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].duplicates == 2  # exact + re-encoded copy merged into the first hit
    assert sum(h.path.rsplit("/", 1)[1].startswith("00") for h in hits) == 1
    qvec = vectors[names.index("00.jpg")]
    for k in (3, 8, 16, 30):  # 30 > distinct items: the gallery is exhausted, fewer come back
        hits = searcher.query_vector(qvec, k=k, collapse_duplicates=threshold)
        _, ranking = searcher.index.search(qvec, len(ids))  # the full ranking (exact ties in FAISS order)
        order = np.asarray([list(ids).index(i) for i in ranking[0]])
        kept, dups = greedy_distinct(vectors, order, k, threshold)
        assert [h.id for h in hits] == [int(ids[i]) for i in kept]
        assert [h.duplicates for h in hits] == dups
    assert len(hits) + sum(h.duplicates for h in hits) == len(names)
    kept_groups = [h.path.rsplit("/", 1)[1][:2] for h in hits]
    assert all(kept_groups.count(g) == 1 for g in ("00", "01", "02", "03"))


def test_weak_hits_follow_the_manifest_threshold(tiny_model, small_index_dir, small_table):
    searcher = Searcher(tiny_model, VectorIndex.load(small_index_dir))  # the same model, already traced
    hits = searcher.query(small_table.paths[3], k=5)
    assert searcher.threshold is None and not any(h.weak for h in hits) and not no_good_match(hits)
    cut = (hits[1].score + hits[2].score) / 2
    searcher.set_threshold(Threshold(score=cut, method="test"))
    hits = searcher.query(small_table.paths[3], k=5)
    assert [h.weak for h in hits] == [False, False, True, True, True]
    assert not no_good_match(hits) and no_good_match(hits[2:]) and no_good_match([])


def test_add_and_remove_match_a_full_rebuild(tiny_model, small_table, tmp_path):
    labelled_folder(tmp_path / "base", table_items(small_table, range(0, 48, 2)))
    labelled_folder(tmp_path / "more", table_items(small_table, range(1, 48, 2)))
    (tmp_path / "more" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    searcher, _ = Searcher.from_table(tiny_model, load_image_folder(tmp_path / "base"), progress=False)
    added, skipped = searcher.add_images([tmp_path / "more", tmp_path / "base" / "nothing.jpg"])
    assert added == list(range(24, 48))
    assert set(skipped) == {str(tmp_path / "more" / "broken.jpg"), str(tmp_path / "base" / "nothing.jpg")}
    again, skipped = searcher.add_images([tmp_path / "more"])  # everything is already there
    assert again == [] and len(skipped) == 25 and "already in the index" in skipped[next(iter(skipped))]
    missing = searcher.remove([3, 30, 999])
    assert missing == [999]
    searcher.save(tmp_path / "index")
    searcher = Searcher(tiny_model, VectorIndex.load(tmp_path / "index"))
    assert len(searcher.index) == 46 and searcher.index.manifest.count == 46 and searcher.index.manifest.next_id == 48
    assert searcher.add_images([tmp_path / "base"])[0] == [48]  # id 3 came back as a new id, never reused

    # the reference: one index built from scratch on the same files
    files = sorted(r.path for r in searcher.index.records())
    from pathlib import Path

    reference_table = ImageTable(
        ids=np.arange(len(files)),
        paths=tuple(files),
        labels=np.asarray([Path(f).parent.name for f in files], dtype=object),
    )
    reference, _ = Searcher.from_table(tiny_model, reference_table, progress=False)
    assert len(reference.index) == len(searcher.index) == 47
    for q in files[::6]:
        a, b = searcher.query(q, k=8), reference.query(q, k=8)
        assert [(h.path, h.label) for h in a] == [(h.path, h.label) for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
