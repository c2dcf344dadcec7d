"""CSA's class-specific affinity loss (paper 004, "affinity-guided FCN for unpaired multi-modal
segmentation", Eq. 2-4).

For a class ``c`` and two layers ``l`` and ``k`` of the shared network, the class-specific feature
maps are ``F^c(l) = F(l) * M^c`` (Eq. 2, ``M^c`` the class's ground-truth mask resized to the feature
map). The affinity matrix ``A^c`` (``M x N`` for ``M`` channels at ``l`` and ``N`` at ``k``) holds
``a^c_{m,n}``, the cosine similarity between channel ``m`` of layer ``l`` and channel ``n`` of layer
``k``, both restricted to the class's region (Eq. 3). The loss (Eq. 4) is the squared L2 distance
between the two modalities' matrices, divided by ``P = M N`` and averaged over classes.

**Eq. 3's ``1/S^c`` is not applied by default** (``region_norm="none"``). The paper prints
``a = cos(F^c_m(l), F^c_n(k)) / S^c`` and gives the reason for ``S^c``: "to ensure that the
affinity is invariant to the size of the saliency region". A cosine already is: it divides the
inner product by both vectors' norms, so it lies in ``[-1, 1]`` whatever the number of voxels in
the region (a region twice as large with the same features gives the same cosine). Dividing it by
the region's size does the opposite of the stated aim: the affinity then scales as ``1/S^c``, tiny
for a large organ and unbounded for a small one (a class covering a fraction of one coarse voxel,
with area-resized masks, has ``S^c << 1`` and affinities of hundreds; the squared difference of
Eq. 4 then outweighs the segmentation loss by orders of magnitude). The plain cosine is what the
paper says it wants, and it keeps every ``a^c_{m,n}`` in ``[-1, 1]`` and ``L_CSA`` in ``[0, 4]``.
The literal reading stays available for comparison: ``region_norm="count"`` (``S^c`` = the
class's mask summed over the comparison grid and the batch) or ``"fraction"`` (that count over the
number of voxels of the grid and batch).

Choices where the paper is open, all made here:

- **Mask resizing**: ``M^c`` is the one-hot ground truth averaged over each feature voxel's
  footprint (``area`` interpolation), once per layer, so a class never vanishes from a coarse
  layer and a boundary voxel counts by the fraction of it the class covers.
- **Two grids**: a cosine needs both maps on one grid. When the layers differ in resolution, the
  finer class-specific map is average-pooled (``area``) onto the coarser layer's grid.
- **What a vector is**: channel ``m``'s values at every voxel of the grid and of every image of
  the modality's batch, so one matrix per class, modality and step (like UMMKD's class means).
- **Eq. 4's norm**: written literally, ``|| 1/P sum_i (A^1_i - A^2_i) ||^2`` squares the *mean*
  difference, so differences of opposite sign cancel and unequal matrices can give zero. The
  paper's text (an L2 consistency, normalised by ``P`` to be invariant to the number of
  channels) is implemented instead: ``1/P sum_i (A^1_i - A^2_i)^2``, the mean squared difference.
- **Classes**: every class including background (the paper's Fig. 2 shows the background
  as one of the class-specific maps). A class absent from either modality's batch has no region to
  compare and is left out; the mean runs over the classes present in both. With none the loss is
  zero (and still part of the graph).
- **A stable cosine**: the cosine's gradient with respect to a vector ``u`` is of size ``1/|u|``,
  unbounded for a region of one or two coarse voxels or a channel that is nearly zero over the
  region. Each vector is divided by ``sqrt(|u|^2 + eps^2)`` instead of ``|u|`` (``eps = 1`` in
  feature units; the U-Net's features leave a normalisation and an activation, so a voxel's
  values are of order one): for a region of ``n`` coarse voxels this is the cosine times about
  ``n / (n + 1)`` (0.99 from a hundred voxels on), it stays within ``[-1, 1]``, and it goes to 0
  (with bounded gradients) for a vanishing region or channel. A zero channel has affinity 0.
- **Too small to compare**: a class that covers less than ``min_region`` (default one) voxel of
  the comparison grid, summed over the batch, has no affinity structure (its vectors have one or
  two entries) and is left out like an absent class, rather than compared, as near-zero
  affinities, with the other modality's.

With these, ``L_CSA`` lies in ``[0, 4]`` and, at ``lambda = 0.5``, its gradient on the shared
kernels stays of the order of the segmentation loss's or below (``Testing/library/methods/test_csa.py``
measures both where a class covers a fraction of one coarse voxel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

REGION_NORMS = ("none", "count", "fraction")  # the first is the default (see the module docstring)
MIN_REGION = 1.0  # voxels of the comparison grid a class must cover to be compared (see the module docstring)
COSINE_EPS = 1.0  # the cosine's norm floor, in feature units (see the module docstring)


def class_masks(label: torch.Tensor, size: Sequence[int], n_classes: int) -> torch.Tensor:
    """One-hot masks ``[B, n_classes, *size]`` of a label map ``[B, 1, ...]`` (or ``[B, ...]``),
    area-resized to ``size``: each value is the fraction of the voxel that the class covers."""
    lab = label.long()
    if lab.dim() > 1 and lab.shape[1] == 1:
        lab = lab[:, 0]
    onehot = F.one_hot(lab, n_classes).movedim(-1, 1).float()
    if tuple(onehot.shape[2:]) == tuple(size):
        return onehot
    return F.interpolate(onehot, size=tuple(size), mode="area")


def _soft_unit(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / sqrt(|x|^2 + eps^2)`` along the last axis: a unit vector when ``|x| >> eps``, shrinking
    to zero (with a gradient bounded by ``1 / eps``) when ``|x|`` is small."""
    return x * torch.rsqrt(x.pow(2).sum(dim=-1, keepdim=True) + eps**2)


def _pool_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``x`` ``[B, C, K, *grid]`` area-resized to ``size`` on its spatial axes."""
    if tuple(x.shape[3:]) == tuple(size):
        return x
    b, c, k = x.shape[:3]
    pooled = F.interpolate(x.reshape(b, c * k, *x.shape[3:]), size=tuple(size), mode="area")
    return pooled.reshape(b, c, k, *pooled.shape[2:])


def class_affinity_matrices(
    feature_l: torch.Tensor,
    feature_k: torch.Tensor,
    label: torch.Tensor,
    n_classes: int,
    region_norm: str = "none",
    min_region: float = MIN_REGION,
    cosine_eps: float = COSINE_EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2-3 for one modality: ``(A, present)``.

    ``feature_l`` is ``[B, M, *grid_l]``, ``feature_k`` is ``[B, N, *grid_k]`` (same batch, any two
    grids), ``label`` the batch's label map at full resolution. ``A`` is ``[n_classes, M, N]``
    (zeros for absent classes), ``present[c]`` tells whether class ``c`` covers at least
    ``min_region`` voxels of the coarser grid over the batch (and any voxel at all when
    ``min_region`` is 0). ``cosine_eps`` is the norm floor of the stable cosine (module docstring).
    """
    if region_norm not in REGION_NORMS:
        raise ValueError(f"unknown region_norm {region_norm!r}; choose one of {REGION_NORMS}.")
    fl, fk = feature_l.float(), feature_k.float()
    grid_l, grid_k = tuple(fl.shape[2:]), tuple(fk.shape[2:])
    grid = grid_l if math.prod(grid_l) <= math.prod(grid_k) else grid_k  # the coarser one
    ml = class_masks(label, grid_l, n_classes)
    mk = ml if grid_k == grid_l else class_masks(label, grid_k, n_classes)
    # Eq. 2: class-specific maps [B, C, channels, *grid], then both on the coarser grid.
    fcl = _pool_to(fl.unsqueeze(1) * ml.unsqueeze(2), grid)
    fck = _pool_to(fk.unsqueeze(1) * mk.unsqueeze(2), grid)
    # One vector per class and channel: every voxel of every image of the batch.
    vl = _soft_unit(fcl.movedim(0, 2).flatten(2), cosine_eps)  # C, M, B*V
    vk = _soft_unit(fck.movedim(0, 2).flatten(2), cosine_eps)  # C, N, B*V
    cosine = torch.einsum("cmv,cnv->cmn", vl, vk)
    region = (ml if grid == grid_l else mk).sum(dim=tuple(d for d in range(ml.dim()) if d != 1))  # C
    if region_norm == "count":
        size = region
    elif region_norm == "fraction":
        size = region / (fl.shape[0] * math.prod(grid))
    else:
        size = torch.ones_like(region)
    present = (region > 0) & (region >= min_region)
    affinity = cosine / torch.where(present, size, torch.ones_like(size))[:, None, None]
    return affinity, present


def csa_loss(
    features_a: tuple[torch.Tensor, torch.Tensor],
    label_a: torch.Tensor,
    features_b: tuple[torch.Tensor, torch.Tensor],
    label_b: torch.Tensor,
    n_classes: int,
    region_norm: str = "none",
    min_region: float = MIN_REGION,
    cosine_eps: float = COSINE_EPS,
) -> torch.Tensor:
    """Eq. 4: ``1/C' sum_c 1/P ||A^{c,a} - A^{c,b}||^2`` over the ``C'`` classes present in both
    modalities' labels (each over at least ``min_region`` voxels of the comparison grid). ``features_*`` are the two layers' feature maps ``(F(l), F(k))`` of one
    modality's batch; the modalities' batches may differ in size and content (unpaired)."""
    aa, pa = class_affinity_matrices(*features_a, label_a, n_classes, region_norm, min_region, cosine_eps)
    ab, pb = class_affinity_matrices(*features_b, label_b, n_classes, region_norm, min_region, cosine_eps)
    if aa.shape != ab.shape:
        raise ValueError(f"the modalities' feature maps have different channel counts: {tuple(aa.shape)} and {tuple(ab.shape)}.")
    shared = pa & pb
    if not bool(shared.any()):
        return sum(f.sum() for f in (*features_a, *features_b)).float() * 0.0
    return ((aa[shared] - ab[shared]) ** 2).mean(dim=(1, 2)).mean()
