"""``PortraitPipeline``: one tensor module from photo to portrait (two passes, subject, render).

The steps, all on tensors and on the photo's device (kornia style: pure functions below, the
module stores the options and calls them)::

    photo (B, 3, H, W) --pass 1: the model on the whole photo (long side = model size)-->
        person matte + coarse parse
    --faces: a face detector on the photo (MTCNN, :mod:`portraitseg.subject.faces`; or the
        connected components of the coarse parse's head classes), each face box squared in the
        HELEN* photos' framing--> pass 2: the model on each face crop (face size, 256 px)
    --the fine parse pasted back softly (feathered crop borders) on the parse grid-->
    --subject alpha: max(person matte, P(kept)) * (1 - P(face classes not kept))-->
    --PortraitRenderer options: upsampled to the photo, guided-filter refined at full resolution,
        background blurred and composited--> portrait (B, 3, H, W), alpha (B, 1, H, W)

The render is :func:`portraitseg.render.fast.render_portrait_fast` (``fast=True``, default: the
smooth steps at reduced resolution, one fused full-resolution pass; 46-49 dB PSNR against the
reference on 1-12 MP photos) or the reference :func:`portraitseg.render.render_portrait`.

No step reads a tensor back to the host on an accelerator (no ``.item()``, no data-dependent
shapes): pass 2 always runs ``max_faces`` crops per photo there and weights the crops that are
not faces by 0; on the CPU, where reading back costs nothing, only real faces are parsed. The
face detector (``faces="mtcnn"``) is the exception: its cascade's shapes depend on the photo, so it
reads its candidates back once per batch (``faces="parse"``, the head regions of the coarse parse,
does not). The
explicit fallback ``subject="person_grabcut"`` (a model without a person head) and a separate
person model (``person_model``) leave the tensors for OpenCV, as documented in
:mod:`portraitseg.render.person`.

Example::

    from portraitseg import PortraitPipeline
    pipe = PortraitPipeline.from_pretrained("default", render="disc")
    out = pipe(images)              # images (B, 3, H, W) in [0, 1] (or uint8), one size per batch
    out.portrait, out.alpha, out.parse
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from portraitseg.boxes import roi_align
from portraitseg.classes import CLASS_NAMES, FLIP_PERMUTATION, NUM_CLASSES, model_class_ids
from portraitseg.config import DEFAULT_MAX_PIXELS, DEFAULT_MODEL_SIZE
from portraitseg.models.inference import run_model, segment_letterboxed
from portraitseg.sizing import long_side
from portraitseg.subject.alpha import class_masks, parse_alpha
from portraitseg.subject.faces import MIN_FACE, FaceFinder

#: What a portrait keeps sharp: ``person`` (the learned person matte; a model without a person
#: head falls back to ``person_grabcut``), ``person_grabcut`` (the face parse extended to the body
#: by GrabCut, :func:`portraitseg.render.person.person_alpha`) or ``face`` (the kept parsed
#: classes only, the paper).
PIPELINE_SUBJECTS = ("person", "person_grabcut", "face")
#: Side of the square face crops of pass 2 (the HELEN* training crops).
FACE_SIZE = 256
#: Long side of the grid the fine parse is pasted on and the subject alpha built on (photos
#: smaller than it keep their size); the renderer upsamples the alpha to the photo and refines it
#: there with its guided filter, which itself solves at ``1 / subsample`` of the photo.
PARSE_SIZE = 1024
#: Faces parsed in pass 2 per photo (the best-scoring ones; ``faces="parse"``: the largest).
MAX_FACES = 8
#: How pass 2 finds faces: ``mtcnn``, a face detector (:mod:`portraitseg.subject.faces`; never
#: on texture), or ``parse``, the head regions of the coarse parse (:func:`find_heads`; fooled by
#: textured backgrounds). Compared in experiments/face_finding/results.md.
FACE_FINDERS = ("mtcnn", "parse")
#: A face crop from a face box (skin + features): ``(side, dx, dy)``, a square ``side`` times the
#: box's long side, centred ``(dx, dy)`` long sides from the box's centre: the HELEN* photos'
#: framing (medians over 200 train photos, experiments/face_finding/calibrate.py).
FACE_FRAMING = (1.695, -0.005, 0.069)
#: A head crop (``faces="parse"``) is the head's bounding box, squared and grown by this factor.
FACE_EXPAND = 1.4
#: Pass 2 runs on a face only if it gains resolution: crop side (pass-1 pixels) * this <= face size.
MIN_GAIN = 1.5
#: Heads smaller than this (long side of the box, pass-1 pixels) are left to pass 1.
MIN_HEAD_PX = 4
#: Heads fill at least this fraction of their box (scattered specks of head classes do not).
MIN_FILL = 0.3
#: Width of the soft border of a pasted crop, as a fraction of its half-side.
PASTE_FEATHER = 0.2


class PipelineError(ValueError):
    """A pipeline cannot be built or run as asked (the message names the option and the fix)."""


@dataclass
class PortraitResult:
    """What :meth:`PortraitPipeline.forward` returns.

    Attributes:
        portrait: ``(B, 3, H, W)`` in [0, 1], the photo's size, dtype float32.
        alpha: ``(B, 1, H, W)`` in [0, 1], the subject alpha the render used (1 = kept sharp).
        parse: class probabilities ``(B, K, h, w)`` on the parse grid (long side
            ``min(parse_size, max(H, W))``): pass 1 with the face crops of pass 2 pasted in.
        person: person-matte probability ``(B, 1, h1, w1)`` at pass-1 resolution, or ``None``
            (no person head).
        faces: ``(B, M, 4)`` face crops ``x0, y0, x1, y1`` in photo pixels (squares).
        face_used: ``(B, M)`` bool, the crops that were parsed and pasted back.
        notes: warnings for the caller to show (fallbacks taken, e.g. GrabCut found no face).
    """

    portrait: torch.Tensor
    alpha: torch.Tensor
    parse: torch.Tensor
    person: torch.Tensor | None
    faces: torch.Tensor
    face_used: torch.Tensor
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# pure functions


def _as_batch(item: Any, where: str) -> torch.Tensor:
    """One input as a ``(b, C, H, W)`` tensor view (a numpy ``(H, W[, C])`` / ``(B, H, W, C)``
    photo array is wrapped and permuted, nothing copied)."""
    if isinstance(item, np.ndarray):
        array = item[..., None] if item.ndim == 2 else item
        if array.ndim not in (3, 4) or array.shape[-1] > 4:
            raise PipelineError(
                f"{where}: a numpy array is read as a photo (H, W, 3) or a batch (B, H, W, 3) (the "
                f"layout of PIL/imageio/OpenCV arrays), got shape {item.shape}; for a (3, H, W) "
                "array pass torch.from_numpy(array)")
        if any(step < 0 for step in array.strides):  # e.g. a BGR -> RGB flip, array[..., ::-1]
            array = array.copy()
        try:
            with warnings.catch_warnings():  # read-only arrays (np.asarray of a PIL image) are only read
                warnings.simplefilter("ignore", UserWarning)
                tensor = torch.from_numpy(array)
        except TypeError:
            raise PipelineError(f"{where}: numpy dtype {item.dtype} is not an image type; pass uint8 "
                                "(0-255) or float (0-1) pixels") from None
        tensor = tensor.movedim(-1, -3)
        return tensor if tensor.ndim == 4 else tensor[None]
    if not isinstance(item, torch.Tensor):
        hint = ""
        if hasattr(item, "__array_interface__"):
            hint = " (a PIL image: np.asarray(image.convert('RGB')))"
        elif isinstance(item, (str, os.PathLike)):
            hint = " (a file: read it first, portraitseg.io.read_image(path) gives an (H, W, 3) array)"
        raise PipelineError(f"{where}: expected a torch.Tensor or a numpy array, got "
                            f"{type(item).__name__}{hint}")
    if item.ndim not in (3, 4):
        raise PipelineError(f"{where}: expected (B, 3, H, W) or (3, H, W), got shape {tuple(item.shape)}")
    return item if item.ndim == 4 else item[None]


#: integer pixel types and their full scale (the values that map to 1.0)
_INT_SCALE = {torch.uint8: 255.0, torch.uint16: 65535.0}


def _check_pixels(batch: torch.Tensor, first: int) -> None:
    """Raise if a float ``(b, 3, H, W)`` batch (images ``first``.. of the call) has NaN/inf or values
    outside [0, 1], naming the image; CPU only (reading values back would synchronise a GPU)."""
    from portraitseg.render.alpha import RANGE_TOLERANCE

    if batch.device.type != "cpu" or batch.numel() == 0 or torch.compiler.is_compiling():
        return
    low, high = batch.flatten(1).aminmax(dim=1)  # NaN propagates into both
    for i, (lo, hi) in enumerate(zip(low.tolist(), high.tolist(), strict=True)):
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise PipelineError(
                f"image #{first + i} has NaN or infinite pixels (min {lo}, max {hi}); repair or drop "
                "it, e.g. torch.nan_to_num(image, nan=0.0).clamp(0, 1)")
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise PipelineError(
                f"image #{first + i} has values in [{lo:.4g}, {hi:.4g}]; float images must be in "
                "[0, 1]: divide 0-255 values by 255 (or pass the uint8 photo as it is)")


def stack_images(
    images: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Photos as one float32 ``(B, 3, H, W)`` batch in [0, 1]: the pipeline's input normaliser.

    Args:
        images: a tensor ``(B, C, H, W)`` / ``(C, H, W)``; a numpy photo array ``(H, W, C)`` /
            ``(B, H, W, C)`` / ``(H, W)`` (HWC, as PIL, imageio and OpenCV hold photos; channels
            taken as RGB); or a sequence of these, all of one size (concatenated in order). ``C``
            is 3 (RGB) or 1 (gray, repeated). uint8 (/255), uint16 (/65535) or float in [0, 1].
        max_pixels: refuse photos of more than this many pixels (``H * W``), checked before any
            copy; ``None``: no limit.
        device: where numpy arrays go (default: the CPU); tensors stay where they are.

    Returns:
        ``(B, 3, H, W)`` float32: ``images`` itself for a float32 RGB tensor, else a new tensor.

    Raises:
        PipelineError: naming the image and the fix: no images, mixed sizes or devices, a shape,
            channel count or dtype that is not a photo, NaN/inf or values outside [0, 1] (float
            input on the CPU), a photo over ``max_pixels``.
    """
    single = isinstance(images, (torch.Tensor, np.ndarray, str)) or not isinstance(images, Sequence)
    sources = [images] if single else list(images)
    items = [_as_batch(src, "images" if single else f"images[{i}]") for i, src in enumerate(sources)]
    batch_size = sum(t.shape[0] for t in items)
    if not items or batch_size == 0:
        raise PipelineError("no images given (an empty batch): pass a (B, 3, H, W) tensor with B >= 1, "
                            "a numpy (H, W, 3) photo or a list of them")
    sizes = [tuple(t.shape[-2:]) for t in items]
    if len(set(sizes)) > 1:
        listed = ", ".join(f"#{i} {h}x{w}" for i, (h, w) in enumerate(sizes))
        raise PipelineError(
            f"images of mixed sizes in one batch ({listed}); a batch holds one size: call the "
            "pipeline once per size (group photos by size) or resize them first"
        )
    height, width = sizes[0]
    if height == 0 or width == 0:
        raise PipelineError(f"images are {width}x{height} pixels: a photo needs at least 1x1")
    if max_pixels is not None and height * width > max_pixels:
        raise PipelineError(
            f"images are {width}x{height} = {height * width:,} pixels, over the limit of "
            f"max_pixels={max_pixels:,}; downscale them, or raise the limit with "
            "PortraitPipeline(..., max_pixels=N) / from_pretrained(..., max_pixels=N) (None: no limit)"
        )
    for i, t in enumerate(items):
        where = f"images[{i}]" if len(items) > 1 else "images"
        channels = t.shape[1]
        if channels == 4:
            raise PipelineError(
                f"{where} has 4 channels (RGBA); the pipeline takes RGB: composite the alpha over a "
                "background or drop it (images[:, :3] for a tensor, array[..., :3] for numpy)")
        if channels not in (1, 3):
            hwc = (" (channels last? a tensor is (B, 3, H, W): images.permute(0, 3, 1, 2))"
                   if t.shape[-1] in (1, 3, 4) else "")
            raise PipelineError(f"{where} has {channels} channels, shape {tuple(t.shape)}: images must be "
                                f"(B, 3, H, W) RGB (or 1-channel gray){hwc}")
        if t.dtype not in _INT_SCALE and not t.is_floating_point():
            raise PipelineError(f"{where}: dtype {t.dtype} is not a pixel type; pass uint8 (0-255), "
                                "uint16 (0-65535) or float in [0, 1], e.g. images.to(torch.uint8)")
    devices = {t.device for t, src in zip(items, sources, strict=True) if isinstance(src, torch.Tensor)}
    if len(devices) > 1:
        raise PipelineError(f"images on several devices ({', '.join(sorted(map(str, devices)))}): move "
                            "them to one, e.g. [t.to('cpu') for t in images]")
    target = devices.pop() if devices else torch.device(device or "cpu")
    if isinstance(images, torch.Tensor) and images.dtype == torch.float32 and images.shape[-3] == 3:
        _check_pixels(items[0], 0)
        return items[0]
    batch = torch.empty((batch_size, 3, height, width), dtype=torch.float32, device=target)
    first = 0
    for t in items:  # one allocation: each input converted straight into its slice
        part = batch[first:first + t.shape[0]]
        part.copy_(t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t)
        if t.dtype in _INT_SCALE:
            part.div_(_INT_SCALE[t.dtype])
        else:
            _check_pixels(part, first)
        first += t.shape[0]
    return batch


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A portrait ``(3, H, W)`` or an alpha ``(H, W)`` in [0, 1] -> ``(H, W, 3)`` / ``(H, W)``
    uint8 (rounded, saturated), for writing files; OpenCV's conversion on the CPU (about 15x faster
    than the same in PyTorch at 12 MP)."""
    import cv2

    planes = x.detach().float().cpu().numpy()
    if planes.ndim == 2:
        return cv2.convertScaleAbs(np.ascontiguousarray(planes), alpha=255.0)
    return cv2.merge([cv2.convertScaleAbs(np.ascontiguousarray(p), alpha=255.0) for p in planes])


def max3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 maximum filter of ``(B, C, H, W)`` (zero padding) as two separable passes of
    ``torch.maximum`` over shifted views (PyTorch's CPU ``max_pool2d`` with stride 1 is ~100x
    slower on a one-channel mask)."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def label_regions(mask: torch.Tensor, iterations: int) -> torch.Tensor:
    """8-connected components of a binary mask ``(B, 1, H, W)`` (no host sync): each pixel of a
    region gets ``1 +`` the largest flat index of the region's pixels, background 0, after
    ``iterations`` max-propagation steps (the longest path inside a region, in pixels, labels any
    region whole; kornia's ``connected_components`` algorithm with a faster 3x3 maximum).

    Returns:
        ``(B, 1, H, W)`` float32 labels (exact integers up to 2^24 pixels).
    """
    b, _, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).view(1, 1, h, w)
    labels = ids * mask
    for _ in range(iterations):
        labels = max3x3(labels).mul_(mask)
    return labels


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
    photo is black, like the letterbox padding)."""
    b, m = squares.shape[:2]
    index = torch.arange(b, device=image.device, dtype=squares.dtype).repeat_interleave(m)[:, None]
    rois = torch.cat([index, squares.reshape(b * m, 4)], 1)
    return roi_align(image, rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


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


def _grid_window(
    squares: torch.Tensor, photo: tuple[int, int], grid: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` on the parse ``grid`` covering ``squares`` ``(N, 4)`` (photo pixels),
    clipped to the grid (reads the boxes back: CPU only)."""
    sy, sx = grid[0] / photo[0], grid[1] / photo[1]
    x0, y0 = squares[:, 0].min().item() * sx, squares[:, 1].min().item() * sy
    x1, y1 = squares[:, 2].max().item() * sx, squares[:, 3].max().item() * sy
    return (max(0, int(y0)), min(grid[0], int(y1) + 2), max(0, int(x0)), min(grid[1], int(x1) + 2))


def _stored_size(info: dict[str, Any]) -> int | None:
    """The training input size (long side) a model file records, if any."""
    size = info.get("image_size")
    if isinstance(size, (list, tuple)) and size:
        return int(max(size))
    if isinstance(size, (int, float)) and size > 0:
        return int(size)
    return None


def render_parse(
    renderer: nn.Module, image: torch.Tensor, probs: torch.Tensor, person: torch.Tensor | None = None,
    subject: str = "person",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's render step on an existing parse (eval figures, training-time grids).

    Args:
        renderer: a :class:`~portraitseg.render.PortraitRenderer` (its ``keep``).
        image: ``(B, 3, H, W)`` in [0, 1]; probs: ``(B, K, h, w)``; person: ``(B, 1, h, w)``
            probability or ``None``.

    Returns:
        ``(portrait (B, 3, H, W), alpha (B, 1, H, W))``.
    """
    kept, dropped = (torch.from_numpy(m).to(probs.device)
                     for m in class_masks(renderer.keep, probs.shape[1]))
    alpha = parse_alpha(probs, person, kept, dropped, subject)
    return renderer(image, alpha=alpha.to(image.dtype))


def render_preset(name: str, **overrides: Any) -> nn.Module:
    """Build the :class:`~portraitseg.render.PortraitRenderer` of the package preset ``name``
    (``disc``, ``gaussian``, ``halo_free``: :func:`portraitseg.presets.preset_names`); a name is
    never taken as a path (:func:`portraitseg.presets.preset_path`).

    Raises:
        PipelineError: not a preset name, or no such preset (listing the presets).
    """
    from portraitseg.presets import PresetError, build_renderer, load_preset

    try:
        options = load_preset(name)
        options.update(overrides)
        return build_renderer(options, f"render preset {name!r}")
    except PresetError as err:
        raise PipelineError(str(err)) from None


# --------------------------------------------------------------------------------------------
# the module


class PortraitPipeline(nn.Module):
    """Segmenter + subject + :class:`~portraitseg.render.PortraitRenderer`: photo -> portrait.

    Args:
        segmenter: a :class:`~portraitseg.models.Segmenter` (``segment`` gives the person matte
            of a two-output model) or any ``image -> logits`` network, ``K`` classes.
        renderer: the render (its ``keep``, ``subject`` and ``person`` options are the defaults).
        subject: ``person`` | ``person_grabcut`` | ``face`` (:data:`PIPELINE_SUBJECTS`; default:
            the renderer's). ``person`` without a person head (and without ``person_model``)
            falls back to ``person_grabcut`` for a Helen parser, to ``face`` otherwise, with a
            note in :attr:`notes`.
        keep: kept class ids (default: the renderer's).
        tta: flip-average both passes.
        model_size: pass-1 long side (default :data:`DEFAULT_MODEL_SIZE`).
        face_pass: run pass 2 (Helen parsers only).
        face_size, max_faces, parse_size: see :data:`FACE_SIZE`, :data:`MAX_FACES`, :data:`PARSE_SIZE`.
        person_model: a separate 2-class person segmenter (its mask replaces the matte);
            ``person_model_size``: its input size.
        class_names: the segmenter's classes (default: Helen's when ``K == 11``).
        fast: render with :func:`portraitseg.render.fast.render_portrait_fast` (else the reference).
        sync_free: pass 2 without reading anything back to the host (all ``max_faces`` crops
            parsed, unused ones weighted 0); default (None): on accelerators only.
        faces: how pass 2 finds faces, :data:`FACE_FINDERS`: ``mtcnn`` (default) or ``parse``.
        min_face: the smallest face ``mtcnn`` finds (face-box width, photo pixels, >= 12);
            smaller faces are left to pass 1.
        max_pixels: refuse photos of more than this many pixels (default: the project's one
            limit, :data:`portraitseg.config.DEFAULT_MAX_PIXELS`; ``None``: no limit).
    """

    def __init__(
        self,
        segmenter: nn.Module,
        renderer: nn.Module,
        *,
        subject: str | None = None,
        keep: Sequence[int] | None = None,
        tta: bool = False,
        model_size: int = DEFAULT_MODEL_SIZE,
        face_pass: bool = True,
        face_size: int = FACE_SIZE,
        max_faces: int = MAX_FACES,
        parse_size: int = PARSE_SIZE,
        person_model: nn.Module | None = None,
        person_model_size: int = DEFAULT_MODEL_SIZE,
        class_names: Sequence[str] | None = None,
        fast: bool = True,
        sync_free: bool | None = None,
        faces: str = "mtcnn",
        min_face: float = MIN_FACE,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__()
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                       or max_pixels < 1):
            raise PipelineError(f"max_pixels={max_pixels!r} must be an integer >= 1 (or None: no limit)")
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        self.fast = bool(fast)
        self.sync_free = sync_free
        self.segmenter = segmenter
        self.renderer = renderer
        self.person_model = person_model
        classes = int(getattr(segmenter, "classes", 0) or len(class_names or ()) or NUM_CLASSES)
        self.classes = classes
        if class_names is None:
            class_names = CLASS_NAMES if classes == NUM_CLASSES else ()
        names = list(class_names)
        self.helen = names == list(CLASS_NAMES)
        self.person_head = bool(getattr(segmenter, "person_head", False))
        for name, value, low in (("model_size", model_size, 32), ("face_size", face_size, 32),
                                 ("parse_size", parse_size, 32), ("max_faces", max_faces, 1),
                                 ("person_model_size", person_model_size, 32)):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise PipelineError(f"{name}={value!r} must be an integer >= {low}")
        self.model_size, self.face_size = int(model_size), int(face_size)
        self.parse_size, self.max_faces = int(parse_size), int(max_faces)
        self.person_model_size = int(person_model_size)
        self.tta = bool(tta)
        self.face_pass = bool(face_pass) and self.helen
        if faces not in FACE_FINDERS:
            raise PipelineError(f"faces={faces!r}: choose one of {', '.join(FACE_FINDERS)}")
        if isinstance(min_face, bool) or not isinstance(min_face, (int, float)) or not min_face >= 12:
            raise PipelineError(f"min_face={min_face!r} must be a number of pixels >= 12 (the face "
                                "detector's smallest window)")
        self.faces = faces
        self.face_finder = FaceFinder(min_face=min_face) if faces == "mtcnn" and self.helen else None

        keep = tuple(renderer.keep if keep is None else keep)
        bad = [k for k in keep if not 0 <= int(k) < classes]
        if not keep or bad:
            raise PipelineError(f"keep={keep}: class ids must be in 0..{classes - 1} for this "
                                f"{classes}-class model")
        self.keep = tuple(sorted({int(k) for k in keep}))
        #: warnings about the set-up (subject fallbacks); the CLI prints them once
        self.notes: list[str] = []
        self.subject = self._resolve_subject(subject or getattr(renderer, "subject", "person"))
        self.person_options = dict(getattr(renderer, "person", {}) or {})

        kept, dropped = class_masks(self.keep, classes)
        self.register_buffer("kept", torch.from_numpy(kept), persistent=False)
        self.register_buffer("dropped", torch.from_numpy(dropped), persistent=False)
        head = torch.zeros(classes, dtype=torch.bool)
        head[1:] = True
        self.register_buffer("head", head, persistent=False)
        perm = torch.tensor(FLIP_PERMUTATION) if self.helen else torch.arange(classes)
        self.register_buffer("flip_perm", perm, persistent=False)

    def _resolve_subject(self, subject: str) -> str:
        if subject not in PIPELINE_SUBJECTS:
            raise PipelineError(f"subject={subject!r}: choose one of {', '.join(PIPELINE_SUBJECTS)}")
        if subject == "person" and not self.person_head and self.person_model is None:
            subject = "person_grabcut"
        if subject == "person_grabcut" and not self.helen:
            self.notes.append("the model is not a Helen face parser; rendering the kept classes as the "
                              "subject (--subject face)")
            return "face"
        return subject

    @property
    def device(self) -> torch.device:
        """The device of the segmenter's parameters (CPU for a parameter-free net)."""
        return next(iter(self.segmenter.parameters()), torch.empty(0)).device

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike = "default",
        render: str | nn.Module = "disc",
        device: str | torch.device | None = None,
        *,
        render_options: dict[str, Any] | None = None,
        keep: str | Sequence[int | str] | None = None,
        person_model: str | os.PathLike | None = None,
        threads: int | None = None,
        **options: Any,
    ) -> PortraitPipeline:
        """Load a model file and a render preset into a pipeline (eval mode, on ``device``): the
        one builder of the render path (the CLI, the benchmarks and Python programs use it).

        The bundled model loads from its TorchScript artifact with PyTorch alone
        (:mod:`portraitseg.models.inference`); the thread count is set for the usable cores
        (:func:`portraitseg.runtime.configure_threads`).

        Args:
            model: ``"default"`` (the bundled model), a checkpoint written by ``python train.py``
                or a weights file exported from one.
            render: a preset name of ``conf/render/`` (``disc``, ``gaussian``, ``halo_free``) or a
                :class:`~portraitseg.render.PortraitRenderer`.
            device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
            render_options: values replacing the preset's (``strength``, ``falloff``, ...).
            keep: kept classes: ids, or names of the model's classes (``"hair,skin"``; Helen
                groups too); default: the renderer's for a Helen parser, else all but background.
            person_model: a 2-class person segmenter's model file (its mask replaces the matte).
            threads: intra-op threads (default: one per usable core, unless already chosen).
            options: the other arguments of :class:`PortraitPipeline` (``model_size`` defaults to
                the model's training size).

        Raises:
            FileNotFoundError: ``model`` does not exist (or no bundled model), naming the path.
            portraitseg.models.checkpoint.CheckpointError: the file is not a portraitseg model
                (it says what it is and what was expected).
            PipelineError: unknown preset, option or class.
        """
        from portraitseg.models.checkpoint import resolve_model_path
        from portraitseg.models.inference import load_inference_segmenter
        from portraitseg.runtime import configure_threads

        configure_threads(threads)
        net, info = load_inference_segmenter(resolve_model_path(model))
        if isinstance(render, str):
            renderer = render_preset(render, **(render_options or {}))
        elif render_options:
            raise PipelineError("render_options apply to a preset name; set them on the renderer object")
        else:
            renderer = render
        names = list(info.get("class_names") or CLASS_NAMES)
        default = tuple(renderer.keep) if names == list(CLASS_NAMES) else None
        try:
            options["keep"] = model_class_ids(default if keep is None else keep, names)
        except ValueError as err:
            raise PipelineError(f"keep={keep!r}: {err}") from None
        if person_model is not None:
            from portraitseg.render.person import load_person_model

            person, person_info = load_person_model(person_model)
            options["person_model"] = person
            options.setdefault("person_model_size", _stored_size(person_info) or DEFAULT_MODEL_SIZE)
        options.setdefault("model_size", _stored_size(info) or DEFAULT_MODEL_SIZE)
        options.setdefault("class_names", info.get("class_names"))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        return cls(net.eval(), renderer, **options).to(dev).eval()

    # ---- the passes

    def parse(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Both passes: ``image (B, 3, H, W)`` in [0, 1] -> ``(parse (B, K, h, w) on the parse
        grid, person (B, 1, h1, w1) or None, faces (B, M, 4), face_used (B, M))``."""
        big = (image.shape[-2], image.shape[-1])
        probs, person = segment_letterboxed(self.segmenter, image, self.model_size, tta=self.tta,
                                            flip_perm=self.flip_perm)
        grid = long_side(*big, self.parse_size, upscale=False)
        coarse = probs
        if grid != tuple(probs.shape[-2:]):
            coarse = F.interpolate(probs, size=grid, mode="bilinear", align_corners=False)
        b, m = image.shape[0], self.max_faces
        if not self.face_pass:
            none = torch.zeros(b, m, dtype=torch.bool, device=image.device)
            return coarse, person, image.new_zeros(b, m, 4), none
        if self.face_finder is None:
            boxes, area = find_heads(probs, self.head, m)
            squares, use = face_squares(boxes, area, tuple(probs.shape[-2:]), big, face_size=self.face_size)
        else:
            boxes, _, found = self.face_finder(image, m)
            squares, gain = frame_faces(boxes, big, tuple(probs.shape[-2:]), face_size=self.face_size)
            use = found & gain
        window = None
        crop_squares, crop_use = squares, use
        sync_free = self.sync_free if self.sync_free is not None else image.device.type != "cpu"
        if not sync_free:  # reading back is free on the CPU: parse and paste real faces only
            count = int(use.sum(1).max())
            if count == 0:
                return coarse, person, squares, use
            order = use.float().argsort(dim=1, descending=True, stable=True)[:, :count]
            crop_squares = squares.gather(1, order[..., None].expand(-1, -1, 4))
            crop_use = use.gather(1, order)
            window = _grid_window(crop_squares[crop_use], big, grid)
        crops = crop_faces(image, crop_squares, self.face_size)
        logits, _ = run_model(self.segmenter, crops, tta=self.tta, flip_perm=self.flip_perm)
        fine = logits.float().softmax(1).view(b, crop_squares.shape[1], *logits.shape[1:])
        parse = paste_faces(coarse, fine, crop_squares, crop_use, big, window=window)
        return parse, person, squares, use

    def subject_alpha(
        self, image: torch.Tensor, parse: torch.Tensor, person: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[str]]:
        """Subject alpha ``(B, 1, h, w)`` (any grid; the renderer upsamples it) and notes."""
        if self.subject == "face":
            return parse_alpha(parse, None, self.kept, self.dropped, "face"), []
        if self.person_model is not None:
            from portraitseg.render.person import person_alpha_from_model

            work = {k: v for k, v in self.person_options.items() if k == "work_size"}
            return person_alpha_from_model(image, self.person_model, parse, self.keep,
                                           input_size=self.person_model_size, **work)
        if self.subject == "person_grabcut" or person is None:
            from portraitseg.render.person import person_alpha

            return person_alpha(image, parse, self.keep, **self.person_options)
        return parse_alpha(parse, person, self.kept, self.dropped, "person"), []

    def render(
        self, image: torch.Tensor, alpha: torch.Tensor, in_place: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The render step: ``image (B, 3, H, W)`` + ``alpha (B, 1, h, w)`` (any grid) ->
        ``(portrait (B, 3, H, W), alpha (B, 1, H, W))`` with the renderer's options; with
        ``in_place`` (fast render only) the portrait overwrites ``image``."""
        if not self.fast:
            return self.renderer(image, alpha=alpha)
        from portraitseg.render.alpha import check_range
        from portraitseg.render.fast import render_portrait_fast

        check_range(alpha, "alpha")
        return render_portrait_fast(image, alpha, **self.renderer.options, out=image if in_place else None)

    def forward(
        self, images: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray]
    ) -> PortraitResult:
        """Photos -> portraits (inference only: runs under ``torch.inference_mode``).

        Args:
            images: ``(B, 3, H, W)`` tensors on the pipeline's device, numpy ``(H, W, 3)`` /
                ``(B, H, W, 3)`` photo arrays (moved to it), or a list of either of one size;
                uint8, uint16 or float in [0, 1] (see :func:`stack_images`).

        Returns:
            :class:`PortraitResult`.

        Raises:
            PipelineError: naming the image and the fix: no images, mixed sizes, a shape, channel
                count or dtype that is not a photo, NaN/inf or out-of-range pixels, a photo over
                ``max_pixels``, tensors on another device.
        """
        with torch.inference_mode():
            image = stack_images(images, self.max_pixels, self.device)
            if image.device != self.device:
                raise PipelineError(
                    f"images are on {image.device} but the pipeline is on {self.device}; move them "
                    f"with images.to({str(self.device)!r}) (or the pipeline with .to())")
            parse, person, faces, used = self.parse(image)
            alpha, notes = self.subject_alpha(image, parse, person)
            # a photo converted here (uint8, a list) is ours: the portrait may overwrite it
            owned = not isinstance(images, torch.Tensor) or image.data_ptr() != images.data_ptr()
            portrait, alpha = self.render(image, alpha.to(image.dtype), in_place=owned)
        return PortraitResult(portrait, alpha, parse, person, faces, used, list(notes))

    def extra_repr(self) -> str:
        return (f"subject={self.subject!r}, keep={self.keep}, tta={self.tta}, model_size={self.model_size}, "
                f"face_pass={self.face_pass}, face_size={self.face_size}, parse_size={self.parse_size}, "
                f"fast={self.fast}")


__all__ = [
    "PIPELINE_SUBJECTS",
    "PipelineError",
    "PortraitPipeline",
    "PortraitResult",
    "crop_faces",
    "face_squares",
    "frame_faces",
    "find_heads",
    "label_regions",
    "paste_faces",
    "render_parse",
    "render_preset",
    "segment_letterboxed",
    "stack_images",
    "to_uint8",
]
