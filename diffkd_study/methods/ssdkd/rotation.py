"""SSD-KD's rotation batches and self-supervision heads (Wang et al., Medical Image Analysis 84:102693, 2023).

Source read: ``enkiwang/Portable-Skin-Lesion-Diagnosis`` at b8bf301 (``experiment/isic/isic_ssd_kd.py``),
whose self-supervision branch is a copy of SSKD's ``student.py`` (``xuguodong03/SSKD``). See
``docs/methods/ssdkd.md`` §3.5 and §3.6; the losses that use this layout are in
:mod:`diffkd_study.methods.ssdkd.losses`.

Batch layout
    ``rotate_batch`` turns B images into 4B rows ``[x0_0, x0_90, x0_180, x0_270, x1_0, ...]``
    (``torch.rot90`` over the last two axes, counter-clockwise like the official ``np.rot90`` on HWC
    images). ``nor_index`` = rows with index % 4 == 0 (originals), ``aug_index`` = the other 3B.

Self-supervision (SS) heads
    ``ProjectionHead`` = Linear(d, d)-ReLU-Linear(d, d) on the pooled embedding. ``similarity_matrix``
    gives S (3B x B) with ``S[i, j] = cos(r_aug[i], r_nor[j])``; the target of row i is its source
    image ``i // 3``. Stage A (``ssd_teacher_ss``) trains the teacher head on ``CE(S, source)``
    with the backbone frozen; stage B (``ssd_kd``) trains the student.

Error-level ranking (``error_level_selection``)
    Row selection sorts with ``stable=True``. The official ``torch.argsort`` is not stable, so when
    several wrong rows share the rank error at the cut-off which one is kept is arbitrary there; here
    the earlier row wins. Ties between class scores (or similarities) in the ranking itself are
    equally arbitrary in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "N_ROTATIONS",
    "ProjectionHead",
    "RowSelection",
    "error_level_selection",
    "layout_indices",
    "rotate_batch",
    "rotation_batch_size",
    "rotation_targets",
    "similarity_matrix",
    "source_targets",
]

N_ROTATIONS = 4


# ----------------------------------------------------------------------------------------- layout
def rotate_batch(x: torch.Tensor) -> torch.Tensor:
    """(B, ..., H, W) -> (4B, ..., H, W) ordered ``[x0_0, x0_90, x0_180, x0_270, x1_0, ...]``.

    Rotations are ``torch.rot90(x, k, dims=(-2, -1))`` for k = 0..3 (counter-clockwise, the same as
    the official ``np.rot90`` on an HWC image). Images must be square so the copies stack.
    """
    if x.ndim < 3:
        raise ValueError(f"rotate_batch needs (B, ..., H, W) images; got {tuple(x.shape)}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotated copies only stack for square images; got H x W = {tuple(x.shape[-2:])}")
    copies = [torch.rot90(x, k, dims=(-2, -1)) for k in range(N_ROTATIONS)]
    return torch.stack(copies, dim=1).reshape(-1, *x.shape[1:])


def layout_indices(
    n_rows: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean ``(nor_index, aug_index)`` over 4B rows: originals (index % 4 == 0) and rotated copies."""
    if n_rows % N_ROTATIONS:
        raise ValueError(f"SSD-KD batches hold 4 rotations per image; {n_rows} rows is not a multiple of 4")
    position = torch.arange(n_rows, device=device) % N_ROTATIONS
    return position == 0, position != 0


def rotation_targets(target: torch.Tensor) -> torch.Tensor:
    """Class label of each rotated row (3B): every original label repeated 3 times."""
    return target.repeat_interleave(N_ROTATIONS - 1)


def source_targets(batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Index of the source image of each rotated row (3B): ``[0, 0, 0, 1, 1, 1, ...]``."""
    return torch.arange(batch, device=device).repeat_interleave(N_ROTATIONS - 1)


def rotation_batch_size(n_rows: int, target: torch.Tensor | None = None) -> int:
    """B, the number of original images in a 4B-row rotation batch (``target``, when given, must hold B labels)."""
    layout_indices(n_rows)  # validates the multiple of 4
    batch = n_rows // N_ROTATIONS
    if target is not None and target.shape != (batch,):
        raise ValueError(
            f"target must hold one label per original image ({batch} for {n_rows} rows); got shape {tuple(target.shape)}"
        )
    return batch


# -------------------------------------------------------------------------------------- SS heads
class ProjectionHead(nn.Sequential):
    """SSKD's self-supervision head: Linear(d, d) - ReLU - Linear(d, d)."""

    def __init__(self, dim: int):
        super().__init__(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))


def similarity_matrix(representation: torch.Tensor) -> torch.Tensor:
    """S (3B x B): cosine similarity of each rotated row with each original row (SSKD's ``simi``)."""
    nor_index, aug_index = layout_indices(representation.shape[0], representation.device)
    nor, aug = representation[nor_index], representation[aug_index]
    return F.cosine_similarity(aug.unsqueeze(1), nor.unsqueeze(0), dim=2)


@dataclass(frozen=True)
class RowSelection:
    """Rows kept by error-level ranking (sorted), and how many the teacher ranked right / wrong."""

    index: torch.Tensor
    n_correct: int
    n_wrong: int


def error_level_selection(
    scores: torch.Tensor, target: torch.Tensor, keep_wrong_ratio: float
) -> RowSelection:
    """SSKD's "error-level ranking": which rows of ``scores`` to distil.

    ``rank[i]`` is the position of ``target[i]`` among row i's scores sorted in descending order
    (0 = the teacher ranks the true class/source first). All rows with rank 0 are kept, plus
    ``int(keep_wrong_ratio * n_wrong)`` of the others, smallest rank first; ties at the cut-off keep
    the earlier row (stable sort; see the module notes).
    """
    if not 0.0 <= keep_wrong_ratio <= 1.0:
        raise ValueError(f"keep_wrong_ratio must be in [0, 1]; got {keep_wrong_ratio}")
    order = torch.argsort(scores, dim=1, descending=True)
    rank = torch.argmax((order == target.unsqueeze(1)).long(), dim=1)
    n_wrong = int((rank != 0).sum())
    n_correct = rank.numel() - n_wrong
    keep = n_correct + int(n_wrong * keep_wrong_ratio)
    kept = torch.sort(torch.argsort(rank, stable=True)[:keep]).values
    return RowSelection(kept, n_correct, n_wrong)
