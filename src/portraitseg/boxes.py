"""Box operations on tensors in plain PyTorch: crops of boxes (``roi_align``) and non-maximum
suppression (``nms``, ``batched_nms``), with the semantics of :mod:`torchvision.ops`.

The render path uses these instead of torchvision's: importing ``torchvision.ops`` imports
``torch._dynamo``, about 2 s on a 2-core machine, more than segmenting and rendering a photo.
The tests check them against torchvision.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices ``(K,)`` of the kept boxes, highest score first;
    a box is dropped when its IoU with a kept, higher-scoring box is above ``iou_threshold``
    (areas without a +1). Runs on the host in memory linear in the boxes.

    Args:
        boxes: ``(N, 4)`` ``x0, y0, x1, y1``; scores: ``(N,)``.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"boxes must be (N, 4) and scores (N,), got {tuple(boxes.shape)}, "
                         f"{tuple(scores.shape)}")
    order = scores.argsort(descending=True, stable=True)
    b = boxes[order].detach().float().cpu().numpy()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    dropped = np.zeros(len(b), bool)
    kept = []
    for i in range(len(b)):
        if dropped[i]:
            continue
        kept.append(i)
        rest = b[i + 1 :]
        w = (np.minimum(b[i, 2], rest[:, 2]) - np.maximum(b[i, 0], rest[:, 0])).clip(min=0)
        h = (np.minimum(b[i, 3], rest[:, 3]) - np.maximum(b[i, 1], rest[:, 1])).clip(min=0)
        inter = w * h
        dropped[i + 1 :] |= inter / (area[i] + area[i + 1 :] - inter) > iou_threshold
    return order[torch.as_tensor(kept, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
                ) -> torch.Tensor:
    """:func:`nms` within each group (``groups`` ``(N,)`` integer ids): boxes of different
    groups never suppress each other. Returns kept indices, highest score first."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    shift = groups.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes - boxes.min() + shift, scores, iou_threshold)


def roi_align(
    image: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int], spatial_scale: float = 1.0,
    sampling_ratio: int = -1, aligned: bool = False,
) -> torch.Tensor:
    """Crops of boxes resampled to ``output_size``: each output pixel is the mean of a grid of
    bilinear samples over its bin (torchvision's RoIAlign; outside the image is 0).

    Args:
        image: ``(B, C, H, W)``; an integer image (a uint8 photo) is read box by box, only the
            pixels under each box converted to float (values kept: 0-255 stay 0-255).
        rois: ``(K, 5)`` ``batch index, x0, y0, x1, y1`` (image pixels before ``spatial_scale``).
        output_size: ``(h, w)``.
        sampling_ratio: samples per bin along each axis; <= 0: ``ceil(box side / output side)``.
        aligned: shift the boxes by half a pixel (pixel centres at ``+0.5``).

    Returns:
        ``(K, C, h, w)``.
    """
    if image.ndim != 4 or rois.ndim != 2 or rois.shape[-1] != 5:
        raise ValueError(f"image must be (B, C, H, W) and rois (K, 5), got {tuple(image.shape)}, "
                         f"{tuple(rois.shape)}")
    ph, pw = output_size
    offset = 0.5 if aligned else 0.0
    start = rois[:, 1:3] * spatial_scale - offset  # x, y
    extent = rois[:, 3:5] * spatial_scale - offset - start
    if not aligned:
        extent = extent.clamp(min=1.0)
    out = rois.new_zeros(len(rois), image.shape[1], ph, pw,
                         dtype=image.dtype if image.is_floating_point() else torch.float32)
    if sampling_ratio > 0:
        grids = torch.full((len(rois), 2), sampling_ratio, dtype=torch.long)
    else:
        sizes = extent.detach().cpu() / torch.tensor([pw, ph], dtype=extent.dtype)
        grids = torch.ceil(sizes).long().clamp(min=1)
    batch = rois[:, 0].long().cpu()
    keys = torch.cat([batch[:, None], grids], 1)
    for key in torch.unique(keys, dim=0).tolist():
        b, gx, gy = key
        mine = (keys == torch.tensor(key)).all(1).nonzero()[:, 0].to(rois.device)
        out[mine] = _align(image[b : b + 1], start[mine], extent[mine], (ph, pw), (gy, gx))
    return out


def _align(image: torch.Tensor, start: torch.Tensor, extent: torch.Tensor, size: tuple[int, int],
           grid: tuple[int, int]) -> torch.Tensor:
    """RoIAlign of boxes ``start`` / ``extent`` ``(K, 2)`` (x, y) of one image, ``grid`` samples
    ``(gy, gx)`` per bin; ``(K, C, h, w)``."""
    (ph, pw), (gy, gx) = size, grid
    k = len(start)
    h, w = image.shape[-2:]
    steps_y = (torch.arange(ph * gy, device=image.device, dtype=start.dtype) + 0.5) / (ph * gy)
    steps_x = (torch.arange(pw * gx, device=image.device, dtype=start.dtype) + 0.5) / (pw * gx)
    ys = start[:, 1:2] + steps_y[None] * extent[:, 1:2]  # (K, ph * gy)
    xs = start[:, 0:1] + steps_x[None] * extent[:, 0:1]  # (K, pw * gx)
    inside = ((ys >= -1) & (ys <= h))[:, :, None] & ((xs >= -1) & (xs <= w))[:, None, :]
    ys, xs = ys.clamp(0, h - 1), xs.clamp(0, w - 1)  # within a pixel of the border: the edge value
    gy_n = ys / max(h - 1, 1) * 2 - 1
    gx_n = xs / max(w - 1, 1) * 2 - 1
    coords = torch.stack([gx_n[:, None, :].expand(-1, ph * gy, -1),
                          gy_n[:, :, None].expand(-1, -1, pw * gx)], -1)  # (K, ph gy, pw gx, 2)
    if image.is_floating_point():
        coords = coords.reshape(1, k * ph * gy, pw * gx, 2).to(image.dtype)
        samples = F.grid_sample(image, coords, mode="bilinear", padding_mode="border", align_corners=True)
        samples = samples.view(image.shape[1], k, ph * gy, pw * gx).transpose(0, 1)
    else:
        samples = torch.cat([_sample_region(image, y, x) for y, x in zip(ys, xs, strict=True)])
    samples = samples * inside[:, None].to(samples.dtype)
    return F.avg_pool2d(samples, (gy, gx)) if gy * gx > 1 else samples


def _sample_region(image: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Bilinear samples ``(1, C, len(ys), len(xs))`` at rows ``ys`` x columns ``xs`` (pixels, in
    the image) of an integer image ``(1, C, H, W)``: only the pixels around them are converted to
    float (values kept, e.g. 0-255). One box at a time: gathering every sample's neighbours at
    once takes as long and ~100 MB for MTCNN's 500 candidates."""
    h, w = image.shape[-2:]
    y0, y1 = int(ys.min()), min(int(ys.max()) + 2, h)
    x0, x1 = int(xs.min()), min(int(xs.max()) + 2, w)
    region = image[:, :, y0:y1, x0:x1].float()
    gy_n = (ys - y0) / max(y1 - y0 - 1, 1) * 2 - 1
    gx_n = (xs - x0) / max(x1 - x0 - 1, 1) * 2 - 1
    coords = torch.stack([gx_n[None, :].expand(len(ys), -1), gy_n[:, None].expand(-1, len(xs))], -1)
    return F.grid_sample(region, coords[None], mode="bilinear", padding_mode="border", align_corners=True)


__all__ = ["batched_nms", "nms", "roi_align"]
