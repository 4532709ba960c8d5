"""Claims built from recorded results, and the checks that catch a figure or a verdict that drifted."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from simlib.evaluation.claims import (
    check_claims,
    check_table,
    claim,
    pair_claim,
    record,
    results_table,
    typed_figures,
)
from simlib.evaluation.stats import paired_difference


@pytest.fixture()
def recorded():
    """What a notebook records: paired differences on the same queries and the claims it showed."""
    rng = np.random.default_rng(0)
    trained = (rng.random(300) < 0.70).astype(float)
    pixels = (rng.random(300) < 0.55).astype(float)
    close = np.where(rng.random(300) < 0.95, pixels, 1 - pixels)
    diffs = [
        paired_difference(trained, pixels, metric="recall@1", a="trained", b="pixels", split="image", part="all"),
        paired_difference(close, pixels, metric="recall@1", a="label-free", b="pixels", split="image", part="all"),
    ]
    return {"differences": [d.to_dict() for d in diffs], "claims": [record(d) for d in diffs]}


def test_claims_word_the_verdict_from_the_interval(recorded):
    strong, noise = recorded["differences"]
    assert claim(strong).startswith("trained beats pixels on Recall@1: ")
    assert claim(noise).startswith("label-free: no detectable difference from pixels on Recall@1")
    assert f"{100 * strong['difference']:+.1f} points" in claim(strong) and "McNemar exact" in claim(strong)
    # R@1 is noise, mAP@R is not: lead with mAP@R and say why
    ap = dict(strong, metric="map@r", test="paired sign-flip")
    text = pair_claim(noise, ap)
    assert text.startswith(claim(ap)) and claim(noise) in text and "separates the methods where Recall@1 cannot" in text
    assert not check_claims(recorded["claims"], recorded["differences"])


def test_editing_one_recorded_result_makes_the_claims_check_fail(recorded):
    # the result moved (a rerun, or an edit of the results file), the claim shown did not
    moved = copy.deepcopy(recorded["differences"])
    moved[0]["a_score"] += 0.01
    assert check_claims(recorded["claims"], moved)
    # the interval was edited so that it holds 0, but the recorded verdict still says "beats"
    edited = copy.deepcopy(recorded)
    edited["claims"][0]["difference"]["low"] = -0.01
    edited["differences"][0]["low"] = -0.01
    assert any("verdict" in p for p in check_claims(edited["claims"], edited["differences"]))
    # a figure typed into the text of the claim
    typed = copy.deepcopy(recorded["claims"])
    typed[0]["text"] = typed[0]["text"].replace(f"{recorded['differences'][0]['a_score']:.3f}", "0.999")
    assert check_claims(typed, recorded["differences"])
    # a claim whose result was never recorded
    assert check_claims(recorded["claims"], recorded["differences"][1:])


def test_a_table_typed_into_a_page_is_checked_against_the_recorded_results():
    rows = [
        {"split": "image", "part": "all", "method": m, "recall@1": r, "map@r": ap, "n_queries": 300}
        for m, r, ap in (("pixels", 0.55, 0.20), ("trained", 0.70, 0.33))
    ]
    diffs = [{"split": "image", "part": "all", "metric": "recall@1", "a": "trained", "b": "pixels",
              "difference": 0.15, "low": 0.08, "high": 0.22}]  # fmt: skip
    table = results_table(rows, diffs, [("image", "all", "image-disjoint")], ["pixels", "trained"])
    assert "| image-disjoint (300) | 0.550 (0.200) | 0.700 (0.330) | vs pixels: +15.0 [+8.0, +22.0] beats |" in table
    page = f"# Results\n\n{table}\n"
    assert not check_table(page, table)
    assert check_table(page.replace("0.700", "0.710"), table)  # one figure edited on the page
    rows[1]["recall@1"] = 0.69  # one recorded result changed
    assert check_table(page, results_table(rows, diffs, [("image", "all", "image-disjoint")], ["pixels", "trained"]))


def test_typed_figures_are_found_in_prose_but_not_in_code_spans():
    assert typed_figures("Recall@1 0.638 against 0.573, in 143 s at 86k q/s") == ["0.638", "0.573", "143 s", "q/s"]
    assert typed_figures("a margin of 0.2, `learning_rate=0.001`, 4,888 images, 16×16 pixels") == []
