"""The ``faces="parse"`` finder: head regions of the coarse parse as face boxes (connected components
on the tensors, no host sync). Fooled by textured backgrounds; the default finder is
:mod:`portraitseg.subject.faces`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from portraitseg.subject.crops import FACE_SIZE, MIN_GAIN, frame_faces
from portraitseg.subject.regions import label_regions, max3x3

#: Faces parsed in pass 2 per photo (the best-scoring ones; ``faces="parse"``: the largest).
MAX_FACES = 8


#: A head crop (``faces="parse"``) is the head's bounding box, squared and grown by this factor.
FACE_EXPAND = 1.4


#: Heads smaller than this (long side of the box, pass-1 pixels) are left to pass 1.
MIN_HEAD_PX = 4


#: Heads fill at least this fraction of their box (scattered specks of head classes do not).
MIN_FILL = 0.3


def find_heads(
    probs: torch.Tensor, head: torch.Tensor, max_faces: int = MAX_FACES
) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest connected regions of head classes in a parse, as boxes (no host sync).

    Connected components (:func:`label_regions`, with as many iterations as the grid's long
    side, so any region is labelled whole) are found on the head mask
    max-pooled to half resolution and dilated by one pixel there, so that parts of a head split by
    a seam of a pixel or two (hair / skin at low resolution) stay one head, at an eighth of the
    cost; the boxes and areas are those of the head pixels at full resolution.

    Args:
        probs: parse ``(B, K, h, w)`` (probabilities or logits: only the argmax is used).
        head: ``(K,)`` bool, the head classes (skin, facial features, hair).
        max_faces: ``M``, boxes per image.

    Returns:
        ``(boxes (B, M, 4) float x0, y0, x1, y1 in parse pixels (exclusive end), area (B, M)
        float pixels)``, largest first; missing regions have area 0.
    """
    b, _, h, w = probs.shape
    mask = head[probs.argmax(1)].float()[:, None]  # (B, 1, h, w)
    grown = max3x3(F.max_pool2d(mask, 2, 2, ceil_mode=True))
    h2, w2 = grown.shape[-2:]
    labels = label_regions(grown, max(h2, w2)).long()  # 0 background, else 1 .. h2 * w2
    labels = labels.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :h, :w]
    ids = (labels * mask.long()).reshape(b, h * w)
    ys = torch.arange(h, device=probs.device, dtype=torch.float32).repeat_interleave(w).expand(b, -1)
    xs = torch.arange(w, device=probs.device, dtype=torch.float32).repeat(h).expand(b, -1)
    n = h2 * w2 + 1

    def reduce(values: torch.Tensor, how: str, init: float) -> torch.Tensor:
        out = torch.full((b, n), init, device=probs.device)
        return out.scatter_reduce_(1, ids, values, how, include_self=True)

    area = torch.zeros(b, n, device=probs.device).scatter_add_(1, ids, torch.ones_like(xs))
    area[:, 0] = 0
    k = min(max_faces, n - 1)
    top_area, top = area.topk(k, 1)
    boxes = torch.stack([reduce(xs, "amin", float(w)), reduce(ys, "amin", float(h)),
                         reduce(xs, "amax", -1.0) + 1, reduce(ys, "amax", -1.0) + 1], -1)
    boxes = boxes.gather(1, top[..., None].expand(-1, -1, 4))
    boxes = torch.where(top_area[..., None] > 0, boxes, torch.zeros_like(boxes))
    if k < max_faces:
        boxes = F.pad(boxes, (0, 0, 0, max_faces - k))
        top_area = F.pad(top_area, (0, max_faces - k))
    return boxes, top_area


def face_squares(
    boxes: torch.Tensor, area: torch.Tensor, grid: tuple[int, int], photo: tuple[int, int], *,
    face_size: int = FACE_SIZE, expand: float = FACE_EXPAND, min_gain: float = MIN_GAIN,
    min_head: float = MIN_HEAD_PX, min_fill: float = MIN_FILL,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head boxes on the pass-1 grid -> square face crops in photo pixels, and which to parse.

    Args:
        boxes: ``(B, M, 4)`` head boxes on the ``grid`` ``(h, w)``; area: ``(B, M)``.
        photo: ``(H, W)``.

    Returns:
        ``(squares (B, M, 4) x0, y0, x1, y1 in photo pixels, use (B, M) bool)``: a crop is used
        when its head is at least ``min_head`` grid pixels long, fills ``min_fill`` of its box,
        and pass 2 gains resolution (the crop spans at most ``face_size / min_gain`` grid pixels).
    """
    sy, sx = photo[0] / grid[0], photo[1] / grid[1]
    x0, y0, x1, y1 = boxes.unbind(-1)
    in_photo = torch.stack([x0 * sx, y0 * sy, x1 * sx, y1 * sy], -1)
    squares, gain = frame_faces(in_photo, photo, grid, face_size=face_size, framing=(expand, 0.0, 0.0),
                                min_gain=min_gain)
    long_grid = torch.maximum(x1 - x0, y1 - y0)
    fill = area / ((x1 - x0) * (y1 - y0)).clamp(min=1.0)
    use = (area > 0) & (long_grid >= min_head) & (fill >= min_fill) & gain
    return squares, use


__all__ = ["MAX_FACES", "face_squares", "find_heads", "label_regions", "max3x3"]
