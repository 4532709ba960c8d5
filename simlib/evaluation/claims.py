"""Claims computed, not typed: sentences and tables built from recorded results, and their checks.

A figure typed into prose is true for one run on one machine. Here every claim is a function of a
recorded result: :func:`claim` words a paired difference (its verdict chosen from the interval by
:func:`simlib.evaluation.stats.verdict`), :func:`pair_claim` leads with the metric whose interval says
something, and :func:`results_table` renders the table the README and docs show. The checks read
the recorded results again: :func:`check_claims` rebuilds each recorded claim from its difference and
reports any that no longer match, :func:`check_table` does the same for a table typed into a page, and
:func:`typed_figures` finds result-like figures typed into a notebook's prose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from simlib.evaluation.stats import NO_DIFFERENCE, PairedDifference, verdict, verdict_phrase

METRIC_NAMES = {"recall@1": "Recall@1", "map@r": "mAP@R"}
# figures a notebook's prose must not type: scores with three decimals, seconds, queries per second
TYPED_FIGURE = re.compile(r"(?<![\w.])[01]\.\d{3}(?!\d)|\b\d[\d,.]*\s?(?:s|min|minutes|seconds)\b|q(?:ueries)?/s")


def _as_dict(d: PairedDifference | Mapping[str, Any]) -> dict[str, Any]:
    return d.to_dict() if isinstance(d, PairedDifference) else dict(d)


def p_text(p: float) -> str:
    """A p-value as the claims print it: ``p = 0.42``, ``p = 0.004``, ``p < 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}"


def claim(d: PairedDifference | Mapping[str, Any]) -> str:
    """One difference as a sentence, its verdict recomputed from its interval.

    ``trained beats pixels on mAP@R: 0.362 against 0.208, +15.4 points [+13.9, +16.9] (paired
    sign-flip p < 0.001, 1,194 queries)``.
    """
    d = _as_dict(d)
    word = verdict(d["low"], d["high"])
    metric = METRIC_NAMES.get(d["metric"], d["metric"])
    head = verdict_phrase(d["a"], d["b"], word)
    return (
        f"{head} on {metric}: {d['a_score']:.3f} against {d['b_score']:.3f}, "
        f"{100 * d['difference']:+.1f} points [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] "
        f"({d['test']} {p_text(d['p_value'])}, {d['n_queries']:,} queries)"
    )


def pair_claim(r1: PairedDifference | Mapping[str, Any], ap: PairedDifference | Mapping[str, Any]) -> str:
    """Recall@1 and mAP@R of one pair, leading with mAP@R (and saying why) when Recall@1's interval
    holds 0 and mAP@R's does not."""
    r1, ap = _as_dict(r1), _as_dict(ap)
    r1_word, ap_word = verdict(r1["low"], r1["high"]), verdict(ap["low"], ap["high"])
    if r1_word == NO_DIFFERENCE and ap_word != NO_DIFFERENCE:
        return (
            f"{claim(ap)}; {claim(r1)}. mAP@R scores the whole ranking of each query, not one neighbour, so it "
            "separates the methods where Recall@1 cannot."
        )
    return f"{claim(r1)}; {claim(ap)}."


def record(d: PairedDifference | Mapping[str, Any], text: str | None = None) -> dict[str, Any]:
    """What a notebook records for a claim it showed: the difference it rests on and the text shown
    (which must contain :func:`claim` of that difference; a :func:`pair_claim` is recorded once per metric)."""
    d = _as_dict(d)
    return {"difference": d, "text": claim(d) if text is None else text}


def check_claims(claims: Iterable[Mapping[str, Any]], differences: Sequence[Mapping[str, Any]]) -> list[str]:
    """Problems with recorded claims: a claim whose difference is not among ``differences`` (the
    recorded results), whose recorded verdict is not the one its interval gives, or whose text is no
    longer the sentence its difference makes. Empty when every claim holds."""
    problems = []
    keys = ("split", "part", "metric", "a", "b")
    index = {tuple(d[k] for k in keys): d for d in differences}
    for c in claims:
        d = c["difference"]
        key = tuple(d[k] for k in keys)
        found = index.get(key)
        if found is None:
            problems.append(f"no recorded result for {key}")
            continue
        if any(
            found[k] != d[k] if isinstance(d[k], str) else abs(float(found[k]) - float(d[k])) > 1e-9
            for k in ("a_score", "b_score", "difference", "low", "high", "p_value", "verdict")
        ):
            problems.append(f"{key}: the claim's figures differ from the recorded result")
        if d["verdict"] != verdict(d["low"], d["high"]):
            problems.append(f"{key}: verdict {d['verdict']!r} but the interval says {verdict(d['low'], d['high'])!r}")
        if claim(found) not in c["text"]:
            problems.append(f"{key}: the text is not the sentence the result makes: {c['text'][:120]!r}")
    return problems


def results_table(
    rows: Sequence[Mapping[str, Any]],
    differences: Sequence[Mapping[str, Any]],
    groups: Sequence[tuple[str, str, str]],
    methods: Sequence[str],
    reference: str = "trained",
) -> str:
    """A Markdown table of Recall@1 (with mAP@R) per group and method, and ``reference`` minus each
    other method in points with its 95 % interval, as the README and docs show it.

    Args:
        rows, differences: a :class:`~simlib.evaluation.protocol.Comparison`'s ``rows`` and
            ``differences`` (as recorded in JSON).
        groups: (split, part, caption) per table row.
        methods: the methods to show, in order.
        reference: the method the differences are taken from.
    """
    by_row = {(r["split"], r["part"], r["method"]): r for r in rows}
    by_diff = {(d["split"], d["part"], d["metric"], d["a"], d["b"]): d for d in differences}
    header = "| test images | " + " | ".join(methods) + " | " + reference + " − each, R@1 points [95 % CI] |"
    lines = [header, "|---" * (len(methods) + 2) + "|"]
    for split, part, caption in groups:
        cells = []
        for m in methods:
            r = by_row.get((split, part, m))
            cells.append("–" if r is None else f"{r['recall@1']:.3f} ({r['map@r']:.3f})")
        diffs = []
        for m in methods:
            d = by_diff.get((split, part, "recall@1", reference, m))
            if d is not None:
                diffs.append(
                    f"vs {m}: {100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
                    f" {verdict(d['low'], d['high'])}"
                )
        n = next((by_row[(split, part, m)]["n_queries"] for m in methods if (split, part, m) in by_row), 0)
        lines.append(f"| {caption} ({n:,}) | " + " | ".join(cells) + " | " + "; ".join(diffs) + " |")
    return "\n".join(lines)


def check_table(page: str, expected: str) -> list[str]:
    """The rows of ``expected`` (a table :func:`results_table` built from recorded results) that
    ``page`` does not contain verbatim."""
    return [line for line in expected.splitlines() if line.startswith("| ") and line not in page]


def typed_figures(markdown: str) -> list[str]:
    """Result-like figures typed into prose (three-decimal scores, run times, queries/s)."""
    text = re.sub(r"`[^`]*`", "", markdown)  # code (parameter names, commands) is not a claim
    return [m.group(0) for m in TYPED_FIGURE.finditer(text)]
