"""How sure is a match: a "no good match" cut chosen on both sides, a calibrated match probability, and a
"copies" cut calibrated per model.

Three verdicts a visitor reads, each calibrated on the index's own gallery and stored with it:

- :class:`NoMatchCut` (:func:`no_match_cut`): the top-1 score under which the app says "no good match".
  The cut is the ``max_false_flag`` quantile of the top-1 scores of validation queries whose top-1 *is*
  of their class (at most that share of them is flagged, and by the split-conformal bound, at most that
  share of new right results drawn like them), and it is *supported* only when it flags wrong top-1 results
  clearly more often than right ones (see :data:`MIN_LIKELIHOOD_RATIO`).
- :class:`~simlib.search.probability.MatchCurve` (in :mod:`simlib.search.probability`): the estimated
  probability that a result is the same kind of product as the query. :func:`confidence_label` words it.
- :class:`CopyCut` (:func:`copy_cut`): the cosine above which two gallery images are copies of each other,
  chosen above the model's nearest *distinct* gallery neighbours and under most re-encoded, resized,
  slightly cropped copies; when no cosine separates them, the two images' 32 x 32 thumbnails must also
  correlate more than any distinct pair of the gallery does (:func:`thumbnail`).

:func:`calibrate_verdicts` runs all three on a :class:`~simlib.search.Searcher`; :class:`Verdicts` holds
them and is JSON-ready (``Verdicts.to_dict()`` / ``Verdicts.from_dict()``) for the index manifest.
Every random choice takes a seed; numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simlib.errors import SimlibError
from simlib.search.calibrate import validation_results
from simlib.search.copies import CopyCut, calibrate_copies, from_mapping, rounded
from simlib.search.novelty import NoveltyCut, calibrate_novelty
from simlib.search.probability import MatchCurve, fit_match_curve, match_probability

DEFAULT_MAX_FALSE_FLAG = 0.10


# A flag that hits wrong top-1 results no more often than right ones carries no information (a random
# score flags both at the same rate). "Supported" asks that the flag's likelihood ratio, the share of wrong
# top-1 results flagged over the share of right ones allowed, be at least this, at 95 % confidence (Wilson
# lower bound of the true-flag rate): the odds that a flagged result is wrong are then at least twice the
# odds over all results.
MIN_LIKELIHOOD_RATIO = 2.0


MIN_WRONG = 10  # fewer wrong top-1 results than this: the true-flag rate is not measured, nothing is said


MIN_RIGHT = 10


WILSON_Z = 1.645  # one-sided 95 %


# Confidence words for a calibrated probability p that a result is the same kind as the query.
HIGH_CONFIDENCE = 0.8  # at least 4 in 5 results like it were the same kind on validation


LOW_CONFIDENCE = 0.5  # under it, a result like it was more often another kind than the same


def _wilson_lower(k: int, n: int, z: float = WILSON_Z) -> float:
    """The Wilson score lower confidence bound of a proportion k / n (0 when n is 0)."""
    if n == 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


@dataclasses.dataclass(frozen=True)
class NoMatchCut:
    """The "no good match" cut and what it does on the validation queries it was chosen on.

    Attributes:
        score: a query whose top-1 score is under it gets "no good match" (when ``supported``).
        max_false_flag: the share of right top-1 results it was allowed to flag (the target).
        false_flag_rate: share of validation queries whose top-1 is right (same class) that it flags.
        true_flag_rate: share of validation queries whose top-1 is wrong that it flags.
        precision_pass: share of right top-1 results among the queries it lets pass.
        precision_flagged: share of wrong top-1 results among the queries it flags (None: flags none).
        base_precision: share of right top-1 results among all validation queries.
        likelihood_ratio: ``true_flag_rate / max_false_flag`` (how much a flag raises the odds of a
            wrong result).
        supported: whether the cut separates (see :data:`MIN_LIKELIHOOD_RATIO`); unsupported: never say it.
        n_queries, n_right, n_wrong: validation queries, and how many had a right / wrong top-1.
        seed: the validation split's seed.
        val: the share of the gallery used as validation queries (None: scores given directly).
    """

    score: float
    max_false_flag: float
    false_flag_rate: float
    true_flag_rate: float
    precision_pass: float | None
    precision_flagged: float | None
    base_precision: float
    likelihood_ratio: float
    supported: bool
    n_queries: int
    n_right: int
    n_wrong: int
    seed: int = 0
    val: float | None = None

    def flags(self, top_score: float | None) -> bool:
        """Whether a query whose best result scores ``top_score`` gets "no good match" (never when unsupported;
        always when there is no result)."""
        if not self.supported:
            return False
        return top_score is None or float(top_score) < self.score

    def unsupported_note(self, unlike_check: bool = False) -> str:
        """The one line said instead of "no good match" when the model cannot support the cut ("" when it can);
        ``unlike_check``: a supported "unlike the gallery" check still says it for images unlike the gallery."""
        if self.supported:
            return ""
        said = (
            '"no good match" is said only for images unlike anything in the gallery'
            if unlike_check
            else '"no good match" is never said'
        )
        return (
            f"This model cannot tell good matches from bad ones: under its calibrated cut would fall "
            f"{self.false_flag_rate:.0%} of the right top-1 results and only {self.true_flag_rate:.0%} of the "
            f"wrong ones, so no result is marked low confidence by its score and {said}."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (rates rounded to 6 digits)."""
        out = dataclasses.asdict(self)
        return {k: rounded(v) if isinstance(v, float) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NoMatchCut:
        """Read :meth:`to_dict`'s output (unknown keys ignored)."""
        return from_mapping(cls, data)


def no_match_cut(
    top_scores: Sequence[float] | np.ndarray,
    right: Sequence[bool] | np.ndarray,
    *,
    max_false_flag: float = DEFAULT_MAX_FALSE_FLAG,
    seed: int = 0,
    val: float | None = None,
) -> NoMatchCut:
    """Choose the "no good match" cut from validation queries.

    The cut is the ``k``-th smallest top-1 score among the ``m`` queries whose top-1 is right, with
    ``k = floor(max_false_flag * (m + 1))``: fewer than ``k`` of them (a share under ``max_false_flag``) score
    under it, and for a new query exchangeable with them the probability that its right top-1 scores under it
    is at most ``k / (m + 1) <= max_false_flag`` (the split-conformal bound). Queries scoring exactly the cut
    pass. When ``k`` is 0 (too few right results for the target) the cut is the lowest score: it flags none.

    Args:
        top_scores: each validation query's top-1 score.
        right: whether that top-1 is of the query's class.
        max_false_flag: the share of right top-1 results the cut may flag.
        seed, val: recorded (how the validation queries were drawn).

    Raises:
        SimlibError: fewer than :data:`MIN_RIGHT` right top-1 results, or a target outside (0, 1).
    """
    if not 0 < max_false_flag < 1:
        raise SimlibError(f"the false-flag target must be in (0, 1), not {max_false_flag}")
    s = np.asarray(top_scores, np.float64)
    c = np.asarray(right, bool)
    if s.shape != c.shape or s.ndim != 1:
        raise SimlibError("top_scores and right must be two lists of the same length")
    good, bad = np.sort(s[c]), s[~c]
    if len(good) < MIN_RIGHT:
        raise SimlibError(f"only {len(good)} validation queries have a right top-1: the cut needs {MIN_RIGHT}")
    k = math.floor(max_false_flag * (len(good) + 1))
    cut = float(good[k - 1]) if k >= 1 else float(s.min())
    flagged = s < cut
    false_flag = float(np.mean(good < cut))
    true_flag = float(np.mean(bad < cut)) if len(bad) else 0.0
    n_flag_wrong = int(np.sum(bad < cut))
    lower = _wilson_lower(n_flag_wrong, len(bad))
    supported = len(bad) >= MIN_WRONG and lower >= MIN_LIKELIHOOD_RATIO * max_false_flag
    passed = ~flagged
    return NoMatchCut(
        score=cut,
        max_false_flag=float(max_false_flag),
        false_flag_rate=false_flag,
        true_flag_rate=true_flag,
        precision_pass=float(np.mean(c[passed])) if passed.any() else None,
        precision_flagged=float(np.mean(~c[flagged])) if flagged.any() else None,
        base_precision=float(np.mean(c)),
        likelihood_ratio=true_flag / max_false_flag,
        supported=bool(supported),
        n_queries=len(s),
        n_right=len(good),
        n_wrong=len(bad),
        seed=int(seed),
        val=val,
    )


def confidence_label(p: float, *, no_match: bool = False) -> str:
    """The words shown for a result of calibrated probability ``p`` of being the same kind as the query.

    "high confidence" at :data:`HIGH_CONFIDENCE` or more (at least 4 in 5 such results were), "low
    confidence" under :data:`LOW_CONFIDENCE` (more often another kind than the same), "medium confidence"
    between. ``no_match``: the query's best result is under a supported :class:`NoMatchCut`, said as
    "low confidence: no good match" whatever ``p``.
    """
    if no_match:
        return "low confidence: no good match"
    if p >= HIGH_CONFIDENCE:
        return "high confidence"
    if p >= LOW_CONFIDENCE:
        return "medium confidence"
    return "low confidence"


@dataclasses.dataclass(frozen=True)
class Verdicts:
    """What the index manifest stores about how sure a match is (each part None when not calibrated; an index
    calibrated before the "unlike the gallery" check has none)."""

    no_match: NoMatchCut | None = None
    curve: MatchCurve | None = None
    copies: CopyCut | None = None
    novelty: NoveltyCut | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"no_match": {...}, "curve": {...}, "copies": {...}, "novelty": {...}}`` (parts that are None left
        out)."""
        parts = ("no_match", "curve", "copies", "novelty")
        return {k: getattr(self, k).to_dict() for k in parts if getattr(self, k)}

    def summary(self) -> str:
        """One line: the "no good match" cut with its error rates, the probability curve, the copy cut."""
        parts = []
        if self.no_match is not None:
            m = self.no_match
            support = "supported" if m.supported else "not supported: never said by score"
            parts.append(
                f"'no good match' under {m.score:.4f} ({support}; "
                f"{m.false_flag_rate:.0%} of right top-1 results and {m.true_flag_rate:.0%} of wrong ones under it, "
                f"{m.n_queries} validation queries)"
            )
        if self.curve is not None:
            parts.append(f"match probability by {self.curve.kind}")
        if self.copies is not None:
            c = self.copies
            thumbs = f" and thumbnails correlating >= {c.thumb_min:.4f}" if c.thumb_min is not None else ""
            parts.append(f"copies: cosine >= {c.score:.4f}{thumbs} ({c.copy_recall:.0%} of test copies found)")
        if self.novelty is not None:
            parts.append(self.novelty.summary())
        return "; ".join(parts) or "nothing calibrated"

    def no_good_match(self, top_score: float | None, unlike_gallery: bool = False) -> bool:
        """Whether a query whose best result scores ``top_score`` gets "no good match": under a supported
        :class:`NoMatchCut`, or ``unlike_gallery`` (a supported :class:`NoveltyCut` flagged the query image)."""
        return bool(unlike_gallery) or (self.no_match is not None and self.no_match.flags(top_score))

    @property
    def checks_novelty(self) -> bool:
        """Whether a supported "unlike the gallery" check is in force."""
        return self.novelty is not None and self.novelty.supported

    def words(self, scores: Sequence[float]) -> list[tuple[float | None, str]]:
        """``(probability, words)`` for each result of one query, best first: the probability of being the same
        kind (None without a curve) and :func:`confidence_label`'s words; every result says "low confidence:
        no good match" when the best one is under the cut (the cut judges the query, from its top-1)."""
        scores = [float(x) for x in scores]
        flagged = self.no_good_match(scores[0] if scores else None)
        p = match_probability(scores, self.curve) if self.curve is not None and scores else None
        out: list[tuple[float | None, str]] = []
        for n in range(len(scores)):
            prob = None if p is None else float(p[n])
            words = confidence_label(prob if prob is not None else 0.0, no_match=flagged)
            out.append((prob, words if prob is not None or flagged else ""))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdicts:
        """Read :meth:`to_dict`'s output."""
        return cls(
            no_match=NoMatchCut.from_dict(data["no_match"]) if data.get("no_match") else None,
            curve=MatchCurve.from_dict(data["curve"]) if data.get("curve") else None,
            copies=CopyCut.from_dict(data["copies"]) if data.get("copies") else None,
            novelty=NoveltyCut.from_dict(data["novelty"]) if data.get("novelty") else None,
        )


def calibrate_verdicts(
    searcher,
    table=None,
    *,
    max_false_flag: float = DEFAULT_MAX_FALSE_FLAG,
    k: int = 5,
    val: float = 0.2,
    n_copies: int = 200,
    seed: int = 0,
    progress: bool | str = False,
) -> Verdicts:
    """All the verdicts for ``searcher``'s gallery: the "no good match" cut and the match probability from
    its labelled validation queries (both None for an unlabelled gallery), the copy cut from its vectors, and
    the "unlike the gallery" check from its images' pixels (None when the gallery has too few image files)."""
    no_match = curve = None
    table_labelled = table.has_labels if table is not None else all(r.label for r in searcher.index.records())
    if table_labelled:
        scores, same = validation_results(searcher, table, k=k, val=val, seed=seed, progress=progress)
        no_match = no_match_cut(scores[:, 0], same[:, 0], max_false_flag=max_false_flag, seed=seed, val=val)
        curve = fit_match_curve(scores, same, seed=seed)
    copies = calibrate_copies(searcher, n_copies=n_copies, seed=seed)
    try:
        novelty = calibrate_novelty([r.path for r in searcher.index.records() if r.path], seed=seed)
    except SimlibError:
        novelty = None  # too few images: the check is not made, and never said
    return Verdicts(no_match=no_match, curve=curve, copies=copies, novelty=novelty)
