"""Frozen configuration dataclasses, saved as JSON next to every model and index."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from simlib.errors import SimlibError

DEFAULT_IMAGE_SIZE = 64
DEFAULT_EMBEDDING_DIM = 128
PRECISIONS = ("float32", "mixed_bfloat16")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """How an embedding model is built and how images are prepared for it.

    Attributes:
        image_size: side of the square input in pixels.
        embedding_dim: size of the L2-normalised output vector.
        weights: backbone weights as resolved at build time: "imagenet", "none" or a file path.
        pooling: "avg" or "max" global pooling of the feature map, or "grid": average pooling
            over a ``grid_size`` x ``grid_size`` grid of cells, concatenated (keeps the layout, which
            is what an untrained backbone's features carry on centred product photos).
        grid_size: cells per side with ``pooling="grid"`` (fewer where the map is smaller).
        feature_stage: the backbone stage whose output the head pools: 0 (default) the last;
            2-5 a ResNet50 stage (4 = ``conv4_block6_out``, stride 16), 1-2 for the tiny backbone.
        resize: "pad" keeps the whole image and pads with white; "crop" centre-crops.
        backbone: "resnet50", or "tiny" (two convolutions: for fast tests and quick experiments).
        seed: seed for the randomly initialised layers.
        trained: True once simlib's triplet training has updated the weights.
        head_hidden: width of a hidden ReLU layer between pooling and projection; 0 (default)
            keeps the head a single linear "projection" layer.
        head_norm: standardise the pooled features before the head (a Keras ``Normalization``
            layer whose mean and variance training sets from the training images). Random
            backbones give features with a large shared component that this removes.
        head_pca: dimensions of a whitened PCA of the standardised pooled features, fitted on the
            training images when training starts (0: none). The projection then starts as the
            identity on the first ``embedding_dim`` components, so training begins from PCA.
        precision: "float32" or "mixed_bfloat16" (bfloat16 compute, float32 weights and output).
    """

    image_size: int = DEFAULT_IMAGE_SIZE
    embedding_dim: int = DEFAULT_EMBEDDING_DIM
    weights: str = "none"
    pooling: str = "avg"
    resize: str = "pad"
    backbone: str = "resnet50"
    seed: int = 0
    trained: bool = False
    head_hidden: int = 0
    head_norm: bool = False
    precision: str = "float32"
    grid_size: int = 4
    feature_stage: int = 0
    head_pca: int = 0

    def __post_init__(self) -> None:
        if not 32 <= self.image_size <= 1024:
            raise SimlibError(f"image size {self.image_size} is out of range: use 32 to 1024 pixels")
        if self.embedding_dim < 2:
            raise SimlibError(f"embedding dimension {self.embedding_dim} must be at least 2")
        if self.pooling not in ("avg", "max", "grid"):
            raise SimlibError(f"pooling must be 'avg', 'max' or 'grid', not {self.pooling!r}")
        if self.grid_size < 1:
            raise SimlibError(f"grid_size must be at least 1, not {self.grid_size}")
        stages = (0, 2, 3, 4, 5) if self.backbone == "resnet50" else (0, 1, 2)
        if self.feature_stage not in stages:
            raise SimlibError(
                f"feature_stage {self.feature_stage} does not exist in the {self.backbone} backbone: "
                f"use one of {stages}"
            )
        if self.head_pca < 0 or (self.head_pca and self.head_pca < self.embedding_dim):
            raise SimlibError(
                f"head_pca must be 0 (none) or at least the embedding dimension {self.embedding_dim}, "
                f"not {self.head_pca}"
            )
        if self.resize not in ("pad", "crop"):
            raise SimlibError(f"resize must be 'pad' or 'crop', not {self.resize!r}")
        if self.backbone not in ("resnet50", "tiny"):
            raise SimlibError(f"backbone must be 'resnet50' or 'tiny', not {self.backbone!r}")
        if self.head_hidden < 0:
            raise SimlibError(f"head_hidden must be 0 (linear head) or a layer width, not {self.head_hidden}")
        if self.precision not in PRECISIONS:
            raise SimlibError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """How the FAISS index is built and searched.

    Attributes:
        kind: "flat" (exact), "hnsw", "ivfpq" (with exact re-ranking) or "auto" (by size).
        hnsw_m: HNSW graph degree.
        hnsw_ef_search: HNSW search breadth (recall/speed trade-off).
        hnsw_ef_construction: HNSW build breadth.
        ivf_nlist: IVF cells; 0 picks about 4*sqrt(n).
        ivf_nprobe: IVF cells visited per query; 0 visits a sixteenth of the cells (at least 16):
            a fixed 16 found only 0.76 of the true top-10 at 100k vectors (0.98 at a sixteenth).
        pq_m: PQ sub-quantisers, i.e. bytes per vector code (the largest divisor of the dimension
            up to this).
        rerank_factor: IVF-PQ candidates re-ranked exactly per result.
    """

    kind: str = "auto"
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 40
    ivf_nlist: int = 0
    ivf_nprobe: int = 0
    pq_m: int = 32
    rerank_factor: int = 8

    def nprobe(self, nlist: int) -> int:
        """IVF cells a search visits in an index of ``nlist`` cells."""
        return max(1, min(nlist, self.ivf_nprobe or max(16, nlist // 16)))

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "flat", "hnsw", "ivfpq"):
            raise SimlibError(f"index kind must be auto, flat, hnsw or ivfpq, not {self.kind!r}")
        if self.ivf_nprobe < 0 or self.pq_m < 1 or self.rerank_factor < 1:
            raise SimlibError("ivf_nprobe must be >= 0 (0: automatic), pq_m and rerank_factor >= 1")


def to_dict(config: Any) -> dict[str, Any]:
    """Return a dataclass as a plain JSON-ready dict."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config from a dict, ignoring keys this version does not know."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})
