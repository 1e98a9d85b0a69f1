"""Pass 2's face crops: face boxes framed as the HELEN* training photos, cropped from the photo,
and their parses pasted back softly on the parse grid (pure functions, ``(B, M, 4)`` boxes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from portraitseg.boxes import roi_align

#: Side of the square face crops of the functions here (a HELEN* photo's size); the pipeline crops
#: at its model's input size, the scale its training saw HELEN* faces at (HELEN* val F1 0.833 at
#: 256 px against 0.858 at 320 for a model trained at 320: experiments/helen_parse/results.md).
FACE_SIZE = 256


#: A face crop from a face box (skin + features): ``(side, dx, dy)``, a square ``side`` times the
#: box's long side, centred ``(dx, dy)`` long sides from the box's centre: the HELEN* photos'
#: framing (medians over 200 train photos, experiments/face_finding/calibrate.py).
FACE_FRAMING = (1.695, -0.005, 0.069)


#: Pass 2 runs on a face only if it gains resolution: crop side (pass-1 pixels) * this <= face size.
MIN_GAIN = 1.5


#: Width of the soft border of a pasted crop, as a fraction of its half-side.
PASTE_FEATHER = 0.2


def frame_faces(
    boxes: torch.Tensor, photo: tuple[int, int], grid: tuple[int, int], *, face_size: int = FACE_SIZE,
    framing: tuple[float, float, float] = FACE_FRAMING, min_gain: float = MIN_GAIN,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Face boxes -> square face crops, and whether pass 2 gains resolution on each.

    Args:
        boxes: ``(B, M, 4)`` x0, y0, x1, y1 in pixels of the photo ``(H, W)``.
        grid: ``(h, w)`` of pass 1.
        framing: ``(side, dx, dy)``: see :data:`FACE_FRAMING`.

    Returns:
        ``(squares (B, M, 4) x0, y0, x1, y1 in photo pixels, gain (B, M) bool)``: ``gain`` where
        the crop spans at most ``face_size / min_gain`` pass-1 pixels.
    """
    side, dx, dy = framing
    x0, y0, x1, y1 = boxes.unbind(-1)
    long = torch.maximum(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) * 0.5 + dx * long, (y0 + y1) * 0.5 + dy * long
    half = 0.5 * side * long
    squares = torch.stack([cx - half, cy - half, cx + half, cy + half], -1)
    to_grid = max(grid[0] / photo[0], grid[1] / photo[1])
    return squares, 2 * half * to_grid * min_gain <= face_size


def crop_faces(image: torch.Tensor, squares: torch.Tensor, size: int = FACE_SIZE) -> torch.Tensor:
    """``(B, 3, H, W)`` photo + ``(B, M, 4)`` squares -> ``(B * M, 3, size, size)`` crops
    (:func:`portraitseg.boxes.roi_align`, averaging several samples per output pixel; outside the
    photo is black, like the letterbox padding). A uint8 photo gives crops in [0, 1] too."""
    b, m = squares.shape[:2]
    index = torch.arange(b, device=image.device, dtype=squares.dtype).repeat_interleave(m)[:, None]
    rois = torch.cat([index, squares.reshape(b * m, 4)], 1)
    crops = roi_align(image, rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return crops if image.is_floating_point() else crops.div_(255.0)


def paste_faces(
    coarse: torch.Tensor, fine: torch.Tensor, squares: torch.Tensor, use: torch.Tensor,
    photo: tuple[int, int], feather: float = PASTE_FEATHER, window: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Paste face-crop parses softly into a parse.

    Args:
        coarse: ``(B, K, h, w)`` probabilities on a grid covering the photo ``(H, W)``.
        fine: ``(B, M, K, S, S)`` probabilities of the crops ``squares`` ``(B, M, 4)`` (photo
            pixels); ``use`` ``(B, M)`` bool (unused crops get weight 0).
        feather: the crops' weight ramps from 0 at their border to 1 over this fraction of
            their half-side.
        window: ``(y0, y1, x0, x1)`` of the parse grid holding every used crop: only it is
            computed (None: the whole grid, the sync-free choice).

    Returns:
        ``(B, K, h, w)``: ``(1 - W) coarse + W * (weighted mean of the crops)`` with ``W`` the
        largest crop weight at each pixel; still probabilities (rows sum to 1).
    """
    b, m, k, s, _ = fine.shape
    h, w = coarse.shape[-2:]
    y0w, y1w, x0w, x1w = window if window is not None else (0, h, 0, w)
    if y1w <= y0w or x1w <= x0w:
        return coarse
    big_h, big_w = photo
    x0, y0, x1, y1 = squares.reshape(b * m, 4).unbind(-1)
    side_x, side_y = (x1 - x0).clamp(min=1e-6), (y1 - y0).clamp(min=1e-6)
    # the window's normalised coordinates [-1, 1] -> the crops'
    span_x, span_y = big_w * (x1w - x0w) / w, big_h * (y1w - y0w) / h
    left, top = big_w * x0w / w, big_h * y0w / h
    theta = torch.zeros(b * m, 2, 3, device=coarse.device)
    theta[:, 0, 0] = span_x / side_x
    theta[:, 0, 2] = (2 * left + span_x - (x0 + x1)) / side_x
    theta[:, 1, 1] = span_y / side_y
    theta[:, 1, 2] = (2 * top + span_y - (y0 + y1)) / side_y
    hw, ww = y1w - y0w, x1w - x0w
    grid = F.affine_grid(theta, [b * m, k, hw, ww], align_corners=False)  # crop coordinates in [-1, 1]
    sampled = F.grid_sample(fine.reshape(b * m, k, s, s), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False).view(b, m, k, hw, ww)
    ramp = ((1.0 - grid.abs()) / feather).clamp(0.0, 1.0)
    weight = (ramp[..., 0] * ramp[..., 1]).view(b, m, 1, hw, ww) * use.view(b, m, 1, 1, 1).float()
    total = weight.sum(1)
    pasted = (sampled * weight).sum(1) / total.clamp(min=1e-6)
    top_w = weight.amax(1)
    inside = coarse[..., y0w:y1w, x0w:x1w]
    blended = inside * (1.0 - top_w) + pasted * top_w
    if window is None:
        return blended
    out = coarse.clone()
    out[..., y0w:y1w, x0w:x1w] = blended
    return out


def grid_window(
    squares: torch.Tensor, photo: tuple[int, int], grid: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` on the parse ``grid`` covering ``squares`` ``(N, 4)`` (photo pixels),
    clipped to the grid (reads the boxes back: CPU only)."""
    sy, sx = grid[0] / photo[0], grid[1] / photo[1]
    x0, y0 = squares[:, 0].min().item() * sx, squares[:, 1].min().item() * sy
    x1, y1 = squares[:, 2].max().item() * sx, squares[:, 3].max().item() * sy
    return (max(0, int(y0)), min(grid[0], int(y1) + 2), max(0, int(x0)), min(grid[1], int(x1) + 2))


__all__ = ["FACE_FRAMING", "FACE_SIZE", "MIN_GAIN", "PASTE_FEATHER", "crop_faces", "frame_faces",
           "grid_window", "paste_faces"]
