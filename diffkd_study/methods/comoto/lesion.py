"""CoMoTo's lesion-specific KD (LsKD), image-level KD baseline and intra-modal point alignment (ImPA).

Written for any (B, C, h, w) feature map, with lesions given as boxes or as binary masks, so it also
serves classifiers trained with lesion masks. What the official code (``Muhammad-Al-Barbary/CoMoTo`` at
904ecfb) computes is in docs/methods/comoto.md §2.3 (LsKD, image-level KD) and §2.4 (ImPA); the point
subsets and the background slice follow ``comoto/engine/utils.py`` there; the choices made here where it
is silent (too few background cells, images without lesions) are in §2.7 ("Lesion points"), the grid
alignment in §2.6 item 4.

Lesion points (:func:`extract_lesion_points`)
    Boxes ``(x1, y1, x2, y2)`` in input-image pixels are scaled to the feature grid (both axes by
    ``w_feat / W_img``, as officially; ``per_axis_scale=True`` scales y by ``h_feat / H_img``), cast to
    int (truncation) and clamped. The feature vector is read at 9 points of each box, in the order of
    ``POINT_NAMES`` (top-left, top-right, bottom-left, bottom-right, centre, left-mid, right-mid, top-mid,
    bottom-mid, with centre ``((x1 + x2) // 2, (y1 + y2) // 2)`` on the integer box), or at 1 (centre),
    4 (the corners TL, TR, BL, BR) or 5 (centre, left-mid, right-mid, top-mid, bottom-mid), each in the
    official ``extract_critical_features``'s order, and averaged over an image's boxes, giving (C, P)
    per image.
Background points (:func:`extract_background_points`)
    As the official ``extract_noncritical_features``, each scaled box is removed from the grid as the
    half-open slice ``[y1:y2, x1:x2]`` (the cells of row y2 and column x2 stay background, and a box
    within one cell removes nothing), the remaining cells are shuffled with ``torch.randperm`` (pass a
    ``torch.Generator`` for reproducibility) and the first P are read, repeated cyclically when an image
    has fewer than P.
Lesions as masks (:func:`lesion_boxes`)
    A (B, H, W) or (B, 1, H, W) binary mask becomes boxes: one per 8-connected component
    (``mask_boxes="components"``, default) or one box around the whole mask (``"bbox"``), with the
    inclusive min/max pixel indices as ``torchvision.ops.masks_to_boxes``. The image size is then the
    mask's (H, W).

Losses registered here: ``lskd`` (:class:`LesionKDLoss`, ``alpha * T**2 * KL`` over the P points of each
channel between batch-mean point features, the student side projected by ``Linear(P, P)``; alpha 2, T 4),
``image_kd`` (:class:`ImageLevelKDLoss`, the same over the positions of (C, h*w) batch-mean maps) and
``impa`` (:class:`ImPALoss`, ``beta * [mean ReLU(1 - cos(v_i, v_j)) + mean ReLU(cos(v_i, u_j))]``,
beta 2, used while training the teacher). Images without a lesion are skipped in the lesion means and
still supply background points; a batch without any gives a loss of 0 attached to the graph and
``last_stats["empty"] = 1.0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from diffkd_study.distill.losses import LOSSES

__all__ = [
    "POINT_NAMES",
    "ImageLevelKDLoss",
    "ImPALoss",
    "LesionKDLoss",
    "LesionPoints",
    "boxes_from_masks",
    "extract_background_points",
    "extract_lesion_points",
    "impa_loss",
    "lesion_boxes",
    "point_distribution_kd",
    "scale_boxes",
]

POINT_NAMES = (
    "top_left",
    "top_right",
    "bottom_left",
    "bottom_right",
    "centre",
    "left_mid",
    "right_mid",
    "top_mid",
    "bottom_mid",
)
# The official subsets (comoto/engine/utils.py, extract_critical_features): centre; corners; centre + 4 mid-edges.
_POINT_SUBSETS = {1: (4,), 4: (0, 1, 2, 3), 5: (4, 5, 6, 7, 8), 9: tuple(range(9))}

ImageSize = tuple[int, int] | Sequence[tuple[int, int]]
Lesions = torch.Tensor | Sequence[torch.Tensor | Mapping[str, torch.Tensor]]


class LesionPoints(NamedTuple):
    """Point features (B, C, P), zero for invalid images, and which images are valid (B,) bool."""

    points: torch.Tensor
    valid: torch.Tensor


# ----------------------------------------------------------------------------- boxes and masks
def boxes_from_masks(
    masks: torch.Tensor, mode: Literal["components", "bbox"] = "components"
) -> list[torch.Tensor]:
    """Boxes (K, 4) xyxy per image from binary masks (B, H, W) or (B, 1, H, W); K = 0 for empty masks.

    ``"components"``: one box per 8-connected region; ``"bbox"``: one box around all foreground.
    Coordinates are inclusive pixel indices (``x2`` = last foreground column).
    """
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"lesion masks must be (B, H, W) or (B, 1, H, W); got {tuple(masks.shape)}")
    if mode not in ("components", "bbox"):
        raise ValueError(f"mode must be 'components' or 'bbox'; got {mode!r}")
    if masks.dtype != torch.bool and not ((masks == 0) | (masks == 1)).all():
        raise ValueError(
            "lesion masks must be binary (0/1 or bool); pass boxes as a list of (K, 4) tensors, one per image"
        )
    boxes = []
    for mask in masks.detach().cpu().numpy() != 0:
        if not mask.any():
            boxes.append(torch.zeros(0, 4))
            continue
        if mode == "bbox":
            ys, xs = np.nonzero(mask)
            boxes.append(torch.tensor([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=torch.float32))
            continue
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        regions = ndimage.find_objects(labels)
        boxes.append(
            torch.tensor(
                [[sx.start, sy.start, sx.stop - 1, sy.stop - 1] for sy, sx in regions], dtype=torch.float32
            )
        )
    return boxes


def lesion_boxes(
    lesions: Lesions,
    image_size: ImageSize | None,
    batch: int,
    mask_boxes: Literal["components", "bbox"] = "components",
) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
    """Normalise lesions to a list of (K, 4) float boxes and one (H, W) image size per image.

    ``lesions``: binary masks (B, H, W) / (B, 1, H, W) (the image size defaults to the mask's), or a
    sequence of per-image (K, 4) xyxy box tensors or torchvision target dicts with ``"boxes"``.
    ``image_size``: one (H, W) for the batch, or one per image.
    """
    if isinstance(lesions, torch.Tensor):
        boxes = boxes_from_masks(lesions, mask_boxes)
        if image_size is None:
            image_size = tuple(lesions.shape[-2:])
    else:
        boxes = []
        for item in lesions:
            box = item["boxes"] if isinstance(item, Mapping) else item
            box = torch.as_tensor(box, dtype=torch.float32).detach().cpu().reshape(-1, 4)
            boxes.append(box)
    if len(boxes) != batch:
        raise ValueError(f"lesions describe {len(boxes)} images but the feature map holds {batch}")
    if image_size is None:
        raise ValueError("image_size (H, W) of the network input is required when lesions are given as boxes")
    if len(image_size) == 2 and all(isinstance(v, int | np.integer) for v in image_size):
        sizes = [(int(image_size[0]), int(image_size[1]))] * batch
    else:
        sizes = [(int(h), int(w)) for h, w in image_size]
        if len(sizes) != batch:
            raise ValueError(f"got {len(sizes)} image sizes for {batch} images")
    return boxes, sizes


def scale_boxes(
    boxes: torch.Tensor,
    feature_size: tuple[int, int],
    image_size: tuple[int, int],
    per_axis_scale: bool = False,
    as_slices: bool = False,
) -> torch.Tensor:
    """Boxes (K, 4) in image pixels -> integer feature-grid boxes, truncated and clamped.

    Both axes use ``w_feat / W_img`` (the official code) unless ``per_axis_scale`` (y uses
    ``h_feat / H_img``). Coordinates are clamped to the last cell (``[0, w_feat - 1]``), as the
    official point reader; ``as_slices=True`` clamps to ``[0, w_feat]`` instead, the bounds of a
    half-open slice, which then selects what the official unclamped background slice selects.
    """
    (h_feat, w_feat), (h_img, w_img) = feature_size, image_size
    ratio_x = w_feat / w_img
    ratio_y = h_feat / h_img if per_axis_scale else ratio_x
    scale = torch.tensor([ratio_x, ratio_y, ratio_x, ratio_y], dtype=torch.float64)
    scaled = (boxes.to(torch.float64) * scale).to(torch.int64)
    last = 0 if as_slices else 1
    scaled[:, 0::2] = scaled[:, 0::2].clamp(0, w_feat - last)
    scaled[:, 1::2] = scaled[:, 1::2].clamp(0, h_feat - last)
    return scaled


def _box_points(grid_boxes: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ys, xs), each (K, P), of the chosen points of integer boxes."""
    x1, y1, x2, y2 = grid_boxes.unbind(1)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    xs = torch.stack([x1, x2, x1, x2, cx, x1, x2, cx, cx], dim=1)
    ys = torch.stack([y1, y1, y2, y2, cy, cy, cy, y1, y2], dim=1)
    subset = list(_POINT_SUBSETS[num_points])
    return ys[:, subset], xs[:, subset]


def _check_num_points(num_points: int) -> None:
    if num_points not in _POINT_SUBSETS:
        raise ValueError(f"num_points must be one of {sorted(_POINT_SUBSETS)}; got {num_points}")


def extract_lesion_points(
    feature_map: torch.Tensor,
    boxes_per_image: Lesions,
    image_size: ImageSize | None = None,
    num_points: int = 9,
    per_axis_scale: bool = False,
    mask_boxes: Literal["components", "bbox"] = "components",
) -> LesionPoints:
    """Feature vectors at ``num_points`` points of each lesion box, averaged over an image's boxes.

    Returns ``LesionPoints(points (B, C, P), valid (B,))``; images without a box are invalid and
    hold zeros. Gradients flow into ``feature_map``. See the module notes for the point order.
    """
    _check_num_points(num_points)
    if feature_map.ndim != 4:
        raise ValueError(f"feature_map must be (B, C, h, w); got {tuple(feature_map.shape)}")
    batch, channels, h, w = feature_map.shape
    boxes, sizes = lesion_boxes(boxes_per_image, image_size, batch, mask_boxes)
    rows, valid = [], []
    for b in range(batch):
        if len(boxes[b]) == 0:
            rows.append(feature_map.new_zeros(channels, num_points))
            valid.append(False)
            continue
        grid = scale_boxes(boxes[b], (h, w), sizes[b], per_axis_scale).to(feature_map.device)
        ys, xs = _box_points(grid, num_points)
        picked = feature_map[b][:, ys, xs]  # (C, K, P)
        rows.append(picked.mean(dim=1))
        valid.append(True)
    return LesionPoints(torch.stack(rows), torch.tensor(valid, device=feature_map.device))


def extract_background_points(
    feature_map: torch.Tensor,
    boxes_per_image: Lesions,
    image_size: ImageSize | None = None,
    num_points: int = 9,
    generator: torch.Generator | None = None,
    per_axis_scale: bool = False,
    mask_boxes: Literal["components", "bbox"] = "components",
) -> LesionPoints:
    """Feature vectors at ``num_points`` random background cells (outside every scaled box).

    A box removes the half-open slice ``[y1:y2, x1:x2]`` of the grid, as the official code (see the
    module notes). Returns ``LesionPoints(points (B, C, P), valid (B,))``; an image without any
    background cell is invalid. The shuffle uses ``torch.randperm(n, generator=generator)`` per image in
    batch order.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1; got {num_points}")
    if feature_map.ndim != 4:
        raise ValueError(f"feature_map must be (B, C, h, w); got {tuple(feature_map.shape)}")
    batch, channels, h, w = feature_map.shape
    boxes, sizes = lesion_boxes(boxes_per_image, image_size, batch, mask_boxes)
    rows, valid = [], []
    for b in range(batch):
        background = torch.ones(h, w, dtype=torch.bool)
        if len(boxes[b]):
            for x1, y1, x2, y2 in scale_boxes(boxes[b], (h, w), sizes[b], per_axis_scale, as_slices=True).tolist():
                background[y1:y2, x1:x2] = False
        cells = torch.nonzero(background.flatten()).flatten()
        if cells.numel() == 0:
            rows.append(feature_map.new_zeros(channels, num_points))
            valid.append(False)
            continue
        shuffled = cells[torch.randperm(cells.numel(), generator=generator)]
        chosen = shuffled[torch.arange(num_points) % shuffled.numel()].to(feature_map.device)
        rows.append(feature_map[b].reshape(channels, h * w)[:, chosen])
        valid.append(True)
    return LesionPoints(torch.stack(rows), torch.tensor(valid, device=feature_map.device))


# ------------------------------------------------------------------------------------- losses
def point_distribution_kd(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """CoMoTo's ``KD_loss``: ``alpha * T**2 * KL(softmax(t/T) || softmax(s/T))``, softmax over dim 1, batchmean over dim 0."""
    log_p_student = F.log_softmax(student / temperature, dim=1)
    p_teacher = F.softmax(teacher.detach() / temperature, dim=1)
    return alpha * temperature**2 * F.kl_div(log_p_student, p_teacher, reduction="batchmean")


def _zero_like_params(module: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """A zero that depends on the module's parameters, so ``backward`` through it is valid."""
    total = like.new_zeros(())
    for parameter in module.parameters():
        total = total + parameter.sum() * 0.0
    return total


@LOSSES.register("lskd")
class LesionKDLoss(nn.Module):
    """CoMoTo LsKD between unpaired student and teacher batches (see the module notes).

    Args:
        alpha: weight (default 2). temperature: T (default 4). num_points: 9 (or 1, 4, 5).
        per_axis_scale: scale box y by the feature/image height ratio instead of the width ratio
            (default False = the official code).
        mask_boxes: how masks become boxes (``"components"`` default, or ``"bbox"``).

    ``forward(student_feature, teacher_feature, student_lesions, teacher_lesions=None,
    student_image_size=None, teacher_image_size=None)``: lesions as boxes or masks; when the teacher
    sees the same images, omit ``teacher_lesions`` and ``teacher_image_size``.
    ``last_stats``: ``empty`` (1.0 when the loss was set to 0), ``n_student_images``,
    ``n_teacher_images`` (images with lesions).
    """

    description = ("LsKD (CoMoTo): {alpha} x T^2 KL of the feature distributions over {num_points} lesion points "
                   "(T = {temperature})")

    def __init__(
        self,
        alpha: float = 2.0,
        temperature: float = 4.0,
        num_points: int = 9,
        per_axis_scale: bool = False,
        mask_boxes: Literal["components", "bbox"] = "components",
    ):
        super().__init__()
        _check_num_points(num_points)
        self.alpha = alpha
        self.temperature = temperature
        self.num_points = num_points
        self.per_axis_scale = per_axis_scale
        self.mask_boxes = mask_boxes
        self.projection = nn.Linear(num_points, num_points)
        self.last_stats: dict[str, float] = {}

    def forward(
        self,
        student_feature: torch.Tensor,
        teacher_feature: torch.Tensor,
        student_lesions: Lesions,
        teacher_lesions: Lesions | None = None,
        student_image_size: ImageSize | None = None,
        teacher_image_size: ImageSize | None = None,
    ) -> torch.Tensor:
        """LsKD between the student's and the teacher's batch (lesions as boxes or masks, see the class).

        Returns 0 attached to the graph (``last_stats["empty"] = 1.0``) when either batch has no lesion; raises
        ``ValueError`` when the two feature maps have different channel counts.
        """
        if teacher_lesions is None:
            teacher_lesions, teacher_image_size = student_lesions, teacher_image_size or student_image_size
        options = {
            "num_points": self.num_points,
            "per_axis_scale": self.per_axis_scale,
            "mask_boxes": self.mask_boxes,
        }
        student = extract_lesion_points(student_feature, student_lesions, student_image_size, **options)
        with torch.no_grad():
            teacher = extract_lesion_points(
                teacher_feature.detach(), teacher_lesions, teacher_image_size, **options
            )
        n_student, n_teacher = int(student.valid.sum()), int(teacher.valid.sum())
        self.last_stats = {
            "empty": float(n_student == 0 or n_teacher == 0),
            "n_student_images": float(n_student),
            "n_teacher_images": float(n_teacher),
        }
        if n_student == 0 or n_teacher == 0:
            return _zero_like_params(self, student_feature)
        if student.points.shape[1] != teacher.points.shape[1]:
            raise ValueError(
                f"student and teacher features have {student.points.shape[1]} and {teacher.points.shape[1]} channels; "
                "LsKD compares them channel by channel"
            )
        z_student = self.projection(student.points[student.valid].mean(dim=0))
        z_teacher = teacher.points[teacher.valid].mean(dim=0)
        return point_distribution_kd(z_student, z_teacher, self.temperature, self.alpha)


@LOSSES.register("image_kd")
class ImageLevelKDLoss(nn.Module):
    """CoMoTo's image-level KD baseline: batch-mean (C, h*w) maps, ``Linear(hw_s -> hw_t)`` on the student, KD over positions.

    Args:
        student_hw: h*w of the student map. teacher_hw: h*w of the teacher map.
        alpha: 2. temperature: 4.
    """

    description = "image-level KD (CoMoTo baseline): {alpha} x T^2 KL of the feature maps over positions (T = {temperature})"

    def __init__(self, student_hw: int, teacher_hw: int, alpha: float = 2.0, temperature: float = 4.0):
        super().__init__()
        self.projection = nn.Linear(student_hw, teacher_hw)
        self.alpha = alpha
        self.temperature = temperature

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        """Image-level KD of two (B, C, h, w) maps; ``ValueError`` when their positions or channels differ
        from what the loss was built for.
        """
        z_student = student_feature.flatten(2).mean(dim=0)
        z_teacher = teacher_feature.detach().flatten(2).mean(dim=0)
        if (
            z_student.shape[1] != self.projection.in_features
            or z_teacher.shape[1] != self.projection.out_features
        ):
            raise ValueError(
                f"image_kd was built for {self.projection.in_features} -> {self.projection.out_features} positions; "
                f"got student {z_student.shape[1]} and teacher {z_teacher.shape[1]}"
            )
        if z_student.shape[0] != z_teacher.shape[0]:
            raise ValueError(
                f"channel counts differ: student {z_student.shape[0]}, teacher {z_teacher.shape[0]}"
            )
        return point_distribution_kd(self.projection(z_student), z_teacher, self.temperature, self.alpha)


def impa_loss(positives: torch.Tensor, negatives: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """ImPA on (B_p, C, P) lesion points and (B_n, C, P) background points (CoMoTo's ``ImPA_loss``)."""
    v = positives.flatten(1)
    u = negatives.flatten(1)
    pull = F.cosine_similarity(v.unsqueeze(1), v.unsqueeze(0), dim=2)
    push = F.cosine_similarity(v.unsqueeze(1), u.unsqueeze(0), dim=2)
    return beta * (torch.relu(1 - pull).mean() + torch.relu(push).mean())


@LOSSES.register("impa")
class ImPALoss(nn.Module):
    """CoMoTo ImPA on the feature map of the model being trained (the teacher, on mammography).

    Args:
        beta: weight (default 2). num_points: 9 (or 1, 4, 5 for the lesion points).
        per_axis_scale, mask_boxes: as :class:`LesionKDLoss`.
        seed: seed of the loss's own ``torch.Generator`` for background sampling (``None``: the
            global torch RNG); a ``generator`` passed to ``forward`` takes precedence.

    ``forward(feature, lesions, image_size=None, generator=None)``. ``last_stats``: ``empty``,
    ``n_positive_images``, ``n_negative_images``.
    """

    description = ("ImPA (CoMoTo): {beta} x (cosine hinges pulling the lesion points of all images together and "
                   "pushing them from background points)")

    def __init__(
        self,
        beta: float = 2.0,
        num_points: int = 9,
        per_axis_scale: bool = False,
        mask_boxes: Literal["components", "bbox"] = "components",
        seed: int | None = None,
    ):
        super().__init__()
        _check_num_points(num_points)
        self.beta = beta
        self.num_points = num_points
        self.per_axis_scale = per_axis_scale
        self.mask_boxes = mask_boxes
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.last_stats: dict[str, float] = {}

    def forward(
        self,
        feature: torch.Tensor,
        lesions: Lesions,
        image_size: ImageSize | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """ImPA on one feature map with its lesions (boxes or masks) and a background-sampling ``generator``.

        Returns 0 attached to the graph when no image has a lesion, and only the pull term when no image has
        background cells.
        """
        options = {
            "num_points": self.num_points,
            "per_axis_scale": self.per_axis_scale,
            "mask_boxes": self.mask_boxes,
        }
        positives = extract_lesion_points(feature, lesions, image_size, **options)
        negatives = extract_background_points(
            feature, lesions, image_size, generator=generator or self.generator, **options
        )
        n_pos, n_neg = int(positives.valid.sum()), int(negatives.valid.sum())
        self.last_stats = {
            "empty": float(n_pos == 0),
            "n_positive_images": float(n_pos),
            "n_negative_images": float(n_neg),
        }
        if n_pos == 0:
            return feature.sum() * 0.0
        pos = positives.points[positives.valid]
        if n_neg == 0:
            pull = F.cosine_similarity(pos.flatten(1).unsqueeze(1), pos.flatten(1).unsqueeze(0), dim=2)
            return self.beta * torch.relu(1 - pull).mean()
        return impa_loss(pos, negatives.points[negatives.valid], self.beta)
