"""Relational knowledge distillation (Park et al., CVPR 2019): the distance and angle relations of a batch of
pooled embeddings, as AberHu's ``Knowledge-Distillation-Zoo`` computes them (the code SSD-KD builds on).

A published standard, so it lives in the generic layer; SSD-KD's D-KD and dual-relation objectives
(:mod:`diffkd_study.methods.ssdkd.losses`) combine these terms with their own. The teacher side is detached
in every term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffkd_study.distill.losses import LOSSES, MultiTermLoss

__all__ = ["RKDLoss", "pairwise_distances", "rkd_angle_loss", "rkd_distance_loss"]


def pairwise_distances(embedding: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance matrix as AberHu's ``pdist``: squared distances clamped at ``eps``, zero diagonal."""
    square = embedding.pow(2).sum(dim=1)
    squared = (square.unsqueeze(0) + square.unsqueeze(1) - 2 * embedding @ embedding.t()).clamp(min=eps)
    distances = squared.sqrt().clone()
    diagonal = torch.arange(len(embedding), device=embedding.device)
    distances[diagonal, diagonal] = 0
    return distances


def _normalised_distances(embedding: torch.Tensor) -> torch.Tensor:
    distances = pairwise_distances(embedding)
    return distances / distances[distances > 0].mean()


def rkd_distance_loss(student_embedding: torch.Tensor, teacher_embedding: torch.Tensor) -> torch.Tensor:
    """RKD distance: smooth-L1 between distance matrices, each divided by its mean non-zero distance."""
    with torch.no_grad():
        teacher = _normalised_distances(teacher_embedding.detach().flatten(1))
    return F.smooth_l1_loss(_normalised_distances(student_embedding.flatten(1)), teacher)


def _angles(embedding: torch.Tensor) -> torch.Tensor:
    differences = F.normalize(embedding.unsqueeze(0) - embedding.unsqueeze(1), p=2, dim=2)
    return torch.bmm(differences, differences.transpose(1, 2)).reshape(-1)


def rkd_angle_loss(student_embedding: torch.Tensor, teacher_embedding: torch.Tensor) -> torch.Tensor:
    """RKD angle: smooth-L1 between ``<unit(e_b - e_a), unit(e_c - e_a)>`` over all N**3 triplets."""
    with torch.no_grad():
        teacher = _angles(teacher_embedding.detach().flatten(1))
    return F.smooth_l1_loss(_angles(student_embedding.flatten(1)), teacher)


@LOSSES.register("rkd")
class RKDLoss(MultiTermLoss):
    """Relational KD on pooled embeddings: ``w_dist * L_dist + w_angle * L_angle`` (terms ``dist``, ``angle``).

    Args:
        w_dist: distance weight (default 25, AberHu / SSD-KD).
        w_angle: angle weight (default 50).
    """

    description = "RKD (Park et al. 2019: {w_dist} x distance + {w_angle} x angle relations of the pooled embeddings)"

    def __init__(self, w_dist: float = 25.0, w_angle: float = 50.0):
        super().__init__()
        self.w_dist = w_dist
        self.w_angle = w_angle

    def terms(
        self, student_embedding: torch.Tensor, teacher_embedding: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{"dist": w_dist * L_dist, "angle": w_angle * L_angle}`` of the pooled embeddings (teacher side
        detached)."""
        return {
            "dist": self.w_dist * rkd_distance_loss(student_embedding, teacher_embedding),
            "angle": self.w_angle * rkd_angle_loss(student_embedding, teacher_embedding),
        }
