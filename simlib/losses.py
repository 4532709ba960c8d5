"""Triplet losses: moved to :mod:`simlib.train.losses`; this name stays for the course and older code."""

from simlib.train.losses import (  # noqa: F401
    DEFAULT_MARGIN,
    DISTANCES,
    MINING,
    BatchTripletLoss,
    FeedbackTripletLoss,
    TripletLoss,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    mined_triplet_loss,
    pairwise_distances,
    semi_hard_triplet_loss,
    triplet_loss,
)
