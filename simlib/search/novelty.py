"""Is a query anything like the gallery? An out-of-distribution check calibrated on the gallery only.

The check reads a dozen pixel statistics of an image (:func:`image_statistics`: how white and how even its
border is, how much of it is near-white, edge and fine-detail energy, colour saturation, how many distinct
colours, brightness entropy and spread, and how the non-background colours spread), and measures how far
they lie from the gallery's (a Mahalanobis distance, :class:`NoveltyCut`). It does not depend on the model:
catalogue photos, noise, colour fields and drawings differ in their pixels whatever the model makes of
them, and a trained embedding, made to tell classes apart, places a noise image among the classes.

:func:`novelty_cut` fits the statistics' mean and covariance on one part of the gallery (the reference) and
sets the cut as a split-conformal quantile of the distances of the other part (held-out gallery images): with
``n`` held-out images and target ``alpha``, the cut is their ``ceil((1 - alpha) (n + 1))``-th smallest
distance, so a new image drawn like the gallery's lies beyond it with probability at most ``alpha`` (the
false-flag bound). Whether the check is *supported* is decided on a few built-in probes (uniform noise and
plain colour fields, :func:`probe_images`): it must flag them all. It never sees the benchmark's test images.

Every random choice takes a seed; numpy and Pillow only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simlib.errors import SimlibError

NOVELTY_VERSION = 1


DEFAULT_MAX_FALSE_FLAG = 0.01  # at most 1 in 100 gallery-like images is called unlike the gallery


MIN_CALIBRATION = 100  # fewer held-out gallery images than this: the cut is not calibrated


MAX_IMAGES = 4000  # at most this many gallery images are read (a seeded sample of larger galleries)


RIDGE = 1e-3  # added to the standardised covariance's diagonal (a constant statistic stays invertible)


STAT_SIZE = 64  # side of the box-filtered copy most statistics are read on


WHITE = 0.94  # a pixel whose darkest channel is above this (of 1) counts as near-white


FEATURES = (
    "border_mean",
    "border_std",
    "white_share",
    "gradient",
    "laplacian",
    "saturation",
    "log_colours",
    "entropy",
    "brightness_std",
    "median_step",
    "ink_spread_mid",
    "ink_log_colours",
    "ink_spread_low",
)


def image_statistics(image: Any) -> np.ndarray:
    """The pixel statistics :class:`NoveltyCut` compares, in the order of :data:`FEATURES` (float64).

    Args:
        image: a path, bytes, PIL image or numpy array (decoded by :func:`simlib.data.open_image`).
    """
    from PIL import Image

    from simlib.data import open_image

    img = open_image(image).convert("RGB")
    a = np.asarray(img.resize((STAT_SIZE, STAT_SIZE), Image.Resampling.BOX), np.float64) / 255
    g = a.mean(axis=2)
    rims = (a[:3], a[-3:], a[:, :3], a[:, -3:])
    border = np.concatenate([r.reshape(-1, 3) for r in rims])
    dx, dy = np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0))
    lap = np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])
    top, bottom = a.max(axis=2), a.min(axis=2)
    saturation = (top - bottom) / np.maximum(top, 1e-3)
    q = (a * 31).round().astype(np.int64)
    colours = len(np.unique(q[..., 0] * 1024 + q[..., 1] * 32 + q[..., 2]))
    hist = np.histogram(g, bins=16, range=(0, 1))[0] / g.size
    hist = hist[hist > 0]
    small = img.copy()
    small.thumbnail((128, 128))
    pixels = np.asarray(small, np.float64).reshape(-1, 3) / 255
    ink = pixels[pixels.min(axis=1) < WHITE]
    if len(ink) >= 10:
        ev = np.linalg.eigvalsh(np.cov(ink, rowvar=False))  # ascending
        top_ev = max(float(ev[2]), 1e-9)
        iq = (ink * 63).round().astype(np.int64)
        ink_stats = [
            math.log1p(100 * float(ev[1]) / top_ev),
            math.log(len(np.unique(iq[:, 0] * 4096 + iq[:, 1] * 64 + iq[:, 2]))),
            math.log1p(100 * float(ev[0]) / top_ev),
        ]
    else:
        ink_stats = [0.0, 0.0, 0.0]
    return np.asarray(
        [
            border.mean(),
            border.std(),
            float((bottom > WHITE).mean()),
            dx.mean() + dy.mean(),
            lap.mean(),
            saturation.mean(),
            math.log(colours),
            float(-(hist * np.log(hist)).sum()),
            g.std(),
            float(np.median(dx)),
            *ink_stats,
        ],
        np.float64,
    )


def probe_images(seed: int = 0, n: int = 6) -> list[np.ndarray]:
    """What no gallery of photos holds, to check the cut is of any use: ``n`` uniform-noise images and ``n``
    plain colour fields (60x80, seeded)."""
    rng = np.random.default_rng(seed)
    noise = [rng.integers(0, 256, (80, 60, 3), dtype=np.uint8) for _ in range(n)]
    fields = [np.full((80, 60, 3), rng.integers(0, 256, 3), np.uint8) for _ in range(n)]
    return noise + fields


def conformal_rank(n: int, alpha: float) -> int:
    """``ceil((1 - alpha) (n + 1))``, the rank of the split-conformal cut among ``n`` scores (rounding error in
    the product ignored)."""
    return math.ceil((1 - alpha) * (n + 1) - 1e-9)


def conformal_cut(scores: Sequence[float] | np.ndarray, alpha: float) -> float:
    """The split-conformal cut of held-out scores: the ``ceil((1 - alpha) (n + 1))``-th smallest (inf when that
    rank is past ``n``: too few scores for ``alpha``). A new score exchangeable with them is above it with
    probability at most ``alpha``.

    Raises:
        SimlibError: ``alpha`` outside (0, 1) or no scores.
    """
    if not 0 < alpha < 1:
        raise SimlibError(f"the false-flag target must be in (0, 1), not {alpha}")
    s = np.sort(np.asarray(scores, np.float64).ravel())
    if s.size == 0:
        raise SimlibError("no held-out scores to calibrate on")
    rank = conformal_rank(s.size, alpha)
    return float(s[rank - 1]) if rank <= s.size else math.inf


@dataclasses.dataclass(frozen=True)
class NoveltyCut:
    """The "unlike anything in the gallery" check and what it does on the gallery images it was calibrated on.

    Attributes:
        score: an image whose distance (:meth:`distance`) is above it is unlike the gallery.
        mean, scale: the reference images' mean and standard deviation of each statistic.
        precision: the inverse of the standardised statistics' covariance (plus :data:`RIDGE`), row by row.
        max_false_flag: the target: at most this share of gallery-like images flagged.
        false_flag_bound: the split-conformal bound on that share, ``1 - rank / (n_calibration + 1)``.
        false_flag_rate: the share of held-out gallery images beyond the cut (0: it is their largest value or
            above).
        probe_flag_rate: the share of :func:`probe_images` flagged.
        supported: the cut is finite and flags every probe; unsupported: never said.
        n_reference, n_calibration: gallery images the statistics were fitted on / the cut was set on.
        seed: the split's seed.
        features: the statistics' names (:data:`FEATURES` when it was made).
        version: :data:`NOVELTY_VERSION` when it was made.
    """

    score: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    precision: tuple[tuple[float, ...], ...]
    max_false_flag: float
    false_flag_bound: float
    false_flag_rate: float
    probe_flag_rate: float
    supported: bool
    n_reference: int
    n_calibration: int
    seed: int = 0
    features: tuple[str, ...] = FEATURES
    version: int = NOVELTY_VERSION

    def distance(self, statistics: np.ndarray) -> np.ndarray:
        """The Mahalanobis distance of each row of ``statistics`` ((n, features) or one vector) to the gallery's."""
        x = np.atleast_2d(np.asarray(statistics, np.float64))
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, np.asarray(self.precision), z), 0.0))

    def flags_statistics(self, statistics: np.ndarray) -> np.ndarray:
        """Whether each row of ``statistics`` is beyond the cut (all False when unsupported)."""
        d = self.distance(statistics)
        return d > self.score if self.supported else np.zeros(len(d), bool)

    def flags(self, image: Any) -> bool:
        """Whether ``image`` looks unlike anything in the gallery (never when unsupported)."""
        return self.supported and bool(self.flags_statistics(image_statistics(image))[0])

    def summary(self) -> str:
        """One line: the cut and its error rate."""
        if not self.supported:
            return f"'unlike the gallery' not supported (it flagged {self.probe_flag_rate:.0%} of the noise probes)"
        return (
            f"'unlike the gallery' beyond distance {self.score:.2f} (at most {self.false_flag_bound:.1%} of "
            f"gallery-like images flagged; {self.n_calibration} held-out gallery images)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (numbers rounded to 6 digits; an infinite cut as None)."""
        from simlib.search.copies import rounded

        out = dataclasses.asdict(self)
        out["score"] = None if not math.isfinite(self.score) else rounded(self.score)
        out["mean"] = [rounded(x) for x in self.mean]
        out["scale"] = [rounded(x) for x in self.scale]
        out["precision"] = [[rounded(x) for x in row] for row in self.precision]
        out["features"] = list(self.features)
        return {k: rounded(v) if isinstance(v, float) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NoveltyCut:
        """Read :meth:`to_dict`'s output (unknown keys ignored).

        Raises:
            SimlibError: a version newer than this simlib reads, or other statistics than :data:`FEATURES`.
        """
        from simlib.search.copies import from_mapping

        version = int(data.get("version", 1))
        features = tuple(data.get("features", FEATURES))
        if version > NOVELTY_VERSION or features != FEATURES:
            raise SimlibError(
                f"the index's 'unlike the gallery' check is of version {version} with other statistics: "
                "run `simlib calibrate` again with this simlib"
            )
        return from_mapping(
            cls,
            {
                **data,
                "score": math.inf if data.get("score") is None else float(data["score"]),
                "mean": tuple(float(x) for x in data["mean"]),
                "scale": tuple(float(x) for x in data["scale"]),
                "precision": tuple(tuple(float(x) for x in row) for row in data["precision"]),
                "features": features,
            },
        )


def novelty_cut(
    reference: np.ndarray,
    calibration: np.ndarray,
    *,
    max_false_flag: float = DEFAULT_MAX_FALSE_FLAG,
    probes: np.ndarray | None = None,
    seed: int = 0,
) -> NoveltyCut:
    """Fit the check on statistics already computed.

    Args:
        reference: (n, features) statistics of the gallery images the mean and covariance are fitted on.
        calibration: (m, features) statistics of other gallery images, held out: the cut is their
            split-conformal quantile (:func:`conformal_cut`).
        max_false_flag: the target share of gallery-like images flagged.
        probes: statistics of images no gallery holds (default: :func:`probe_images`'s).
        seed: recorded (how the gallery was split).

    Raises:
        SimlibError: fewer than :data:`MIN_CALIBRATION` held-out images, fewer reference images than
            statistics, or shapes that do not match.
    """
    ref = np.asarray(reference, np.float64)
    cal = np.asarray(calibration, np.float64)
    if ref.ndim != 2 or cal.ndim != 2 or ref.shape[1] != cal.shape[1]:
        raise SimlibError("reference and calibration must be two (n, features) arrays with the same features")
    if len(cal) < MIN_CALIBRATION:
        raise SimlibError(
            f"only {len(cal)} held-out gallery images: the 'unlike the gallery' cut needs {MIN_CALIBRATION}"
        )
    if len(ref) <= ref.shape[1]:
        raise SimlibError(f"only {len(ref)} reference images for {ref.shape[1]} statistics")
    mean = ref.mean(axis=0)
    scale = np.where(ref.std(axis=0) > 1e-9, ref.std(axis=0), 1.0)
    cov = np.cov((ref - mean) / scale, rowvar=False) + RIDGE * np.eye(ref.shape[1])
    precision = np.linalg.inv(cov)
    partial = NoveltyCut(
        score=math.inf,
        mean=tuple(mean.tolist()),
        scale=tuple(scale.tolist()),
        precision=tuple(tuple(r) for r in precision.tolist()),
        max_false_flag=float(max_false_flag),
        false_flag_bound=0.0,
        false_flag_rate=0.0,
        probe_flag_rate=0.0,
        supported=True,
        n_reference=len(ref),
        n_calibration=len(cal),
        seed=int(seed),
    )
    d = partial.distance(cal)
    cut = conformal_cut(d, max_false_flag)
    rank = conformal_rank(len(d), max_false_flag)
    if probes is None:
        probes = np.stack([image_statistics(p) for p in probe_images(seed)])
    probe_rate = float(np.mean(partial.distance(probes) > cut))
    return dataclasses.replace(
        partial,
        score=cut,
        false_flag_bound=1 - rank / (len(d) + 1) if math.isfinite(cut) else 0.0,
        false_flag_rate=float(np.mean(d > cut)),
        probe_flag_rate=probe_rate,
        supported=bool(math.isfinite(cut) and probe_rate == 1.0),
    )


def calibrate_novelty(
    images: Sequence[Any],
    *,
    max_false_flag: float = DEFAULT_MAX_FALSE_FLAG,
    held_out: float = 0.2,
    max_images: int = MAX_IMAGES,
    seed: int = 0,
) -> NoveltyCut:
    """The check for a gallery: a seeded sample of at most ``max_images`` of its images, ``held_out`` of them
    set aside for the cut, the rest the reference (:func:`novelty_cut`).

    Args:
        images: the gallery's images (paths; unreadable ones are left out).
        max_false_flag: the target share of gallery-like images flagged.
        held_out: the share of the sample the cut is set on.
        max_images: the sample's size at most.
        seed: seeds the sample and the split.

    Raises:
        SimlibError: a gallery too small (see :func:`novelty_cut`).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))[:max_images]
    stats = []
    for i in order:
        try:
            stats.append(image_statistics(images[int(i)]))
        except (SimlibError, OSError, ValueError):
            continue
    if not stats:
        raise SimlibError("no gallery image could be read for the 'unlike the gallery' check")
    x = np.stack(stats)
    n_cal = round(held_out * len(x))
    return novelty_cut(x[n_cal:], x[:n_cal], max_false_flag=max_false_flag, seed=seed)
