"""A search result and how every listing shows it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

WEAK_MARK = "low confidence"  # a result under the calibrated "good match" cut


@dataclasses.dataclass(frozen=True)
class Hit:
    """One search result, best first (rank 1)."""

    rank: int
    id: int
    score: float
    path: str | None
    label: str | None
    attributes: dict[str, str]
    # near-copies merged into this hit by ``collapse_duplicates`` (0 when collapse is off)
    duplicates: int = 0
    # below the index's calibrated "good match" threshold, or the query is unlike the gallery (False when the
    # index has neither)
    weak: bool = False
    # the calibrated probability that the result is the same kind as the query (None: not calibrated, or the query
    # is unlike the gallery, where the calibration does not apply)
    probability: float | None = None
    # the query image looks unlike anything in the gallery (a calibrated check, the same on every hit of a
    # query; its hits are then ``weak`` too)
    unlike_gallery: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The hit as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def marks(self) -> list[str]:
        """What a listing adds after the score: "+N copies" (merged near-copies) and "low confidence" (under the
        calibrated cut), when they apply."""
        copies = [f"+{self.duplicates} cop{'ies' if self.duplicates > 1 else 'y'}"] if self.duplicates else []
        return copies + ([WEAK_MARK] if self.weak else [])

    def caption(self) -> str:
        """One line for a result tile: ``#rank · how alike · label · +N copies · low confidence`` (the parts
        that apply). How alike: the calibrated probability of the same kind ("87% same kind") when the index
        has one, else the cosine (3 decimals)."""
        alike = score_text(self.score) if self.probability is None else probability_text(self.probability)
        return " · ".join([f"#{self.rank}", alike, *([self.label] if self.label else []), *self.marks()])


def probability_text(probability: float) -> str:
    """A calibrated match probability as a visitor reads it: "87% same kind"."""
    return f"{probability:.0%} same kind"


def score_text(score: float) -> str:
    """A similarity score as every listing shows it (3 decimals)."""
    return f"{score:.3f}"


def format_hits(hits: Sequence[Hit], collapse: bool = False) -> str:
    """The hits as a text table (``simlib search``): rank, score, label, path, then the merged-copies count
    (with ``collapse``) and the weak mark (when a hit is weak)."""
    rows = [(f"{'rank':>4}", f"{'score':>6}", f"{'label':<20}", "path")]
    rows += [
        (f"{h.rank:>4}", f"{score_text(h.score):>6}", f"{str(h.label or '-')[:20]:<20}", str(h.path)) for h in hits
    ]
    lines = ["  ".join(r) for r in rows]
    if not collapse and not any(h.weak for h in hits):
        return "\n".join(lines)
    width = max(len(line) for line in lines)
    out = [lines[0].ljust(width) + ("  merged" if collapse else "")]
    for line, h in zip(lines[1:], hits, strict=True):
        mark = (f"  +{h.duplicates}" if collapse else "") + (f"  {WEAK_MARK}" if h.weak else "")
        out.append(line.ljust(width) + mark)
    return "\n".join(out)


def no_good_match(hits: Sequence[Hit]) -> bool:
    """True when no hit clears the calibrated threshold, the query looks unlike the gallery, or there are no
    hits: say "no good match"."""
    return all(h.weak for h in hits) or any(h.unlike_gallery for h in hits)
