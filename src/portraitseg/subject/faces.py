"""Find faces in photos: boxes for the face-crop pass of :class:`~portraitseg.pipeline.PortraitPipeline`.

The finder is MTCNN (Zhang et al. 2016: a cascade of three small CNNs, P-Net on an image pyramid,
R-Net and O-Net on the candidate crops), reimplemented here in PyTorch, batched, with
:mod:`portraitseg.boxes` for the crops (``roi_align``) and the non-maximum suppression. Its weights
(0.5 M parameters, 2 MB) ship in the package (``weights/mtcnn.pt``, converted from the MIT-licensed
facenet-pytorch 2.6.0 wheel; see ``weights/MTCNN_LICENSE.md``): nothing is downloaded. Unlike the
face parser's head classes, it is trained to tell faces from non-faces, so textured backgrounds
(brick, gravel, fur, food) give no faces (``experiments/face_finding/results.md``).

A face box is the extent of a face's skin and facial features (HELEN*'s classes 1-9: forehead to
chin, cheek to cheek, no hair or ears): MTCNN's own boxes (within 4 % of it) are mapped onto that
definition by :data:`BOX_CALIBRATION`, measured on HELEN* train labels.

The interface is one pure function, :func:`find_faces`: ``image (B, 3, H, W)``, a detector and
``M`` -> ``(boxes (B, M, 4), scores (B, M), used (B, M))``. Any ``nn.Module`` that maps a photo to
per-image ``(N, 5)`` tensors of ``x0, y0, x1, y1, score`` face boxes (e.g. a box head on the
segmenter's encoder, which would also see the pass-1 features) can take :class:`MTCNN`'s place.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

#: The packaged MTCNN weights (P-, R- and O-Net state dicts, prefixed ``pnet.``, ``rnet.``, ``onet.``).
WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "mtcnn.pt"
#: Smallest face found by default (face-box width, photo pixels); smaller faces are left to pass 1.
MIN_FACE = 24
#: Score thresholds of the three stages (P-, R-, O-Net): the published defaults, but 0.95 for the
#: last (the published 0.7 lets textures through: gravel scores 0.85; experiments/face_finding).
THRESHOLDS = (0.6, 0.7, 0.95)
#: Ratio between the pyramid's scales.
PYRAMID_FACTOR = 0.709
#: Pixels of the pyramid's first (largest) level at most: on large photos the smallest face found
#: grows past ``min_face`` (12 MP: about 42 px) so that the search costs what a 1 MP photo's does.
MAX_LEVEL_PIXELS = 1_000_000
#: Candidates per photo kept after P-Net (the best-scoring; textures give thousands).
MAX_CANDIDATES = 500
#: MTCNN box -> face box (skin + features): ``(dx, dy, sx, sy)``: the face box's centre is the
#: MTCNN box's centre + ``(dx * w, dy * h)``, its size ``(sx * w, sy * h)``. Medians over 199
#: HELEN* train photos (``experiments/face_finding/calibrate.py``).
BOX_CALIBRATION = (0.017, 0.011, 1.038, 1.014)


def _cascade_net(
    layers: list[tuple[int, int, int]], pools: list[tuple[int, int] | None]
) -> nn.Sequential:
    """Conv + PReLU (+ max-pool) blocks: ``layers`` ``(in, out, kernel)``, ``pools`` ``(kernel,
    stride)`` or None after each."""
    blocks: list[nn.Module] = []
    for (cin, cout, k), pool in zip(layers, pools, strict=True):
        blocks += [nn.Conv2d(cin, cout, k), nn.PReLU(cout)]
        if pool is not None:
            blocks.append(nn.MaxPool2d(*pool, ceil_mode=True))
    return nn.Sequential(*blocks)


class PNet(nn.Module):
    """Proposal net, fully convolutional: ``(B, 3, H, W)`` normalized -> ``(box offsets (B, 4, h, w),
    face probability (B, h, w))``, one 12 px window per output cell (stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _cascade_net([(3, 10, 3), (10, 16, 3), (16, 32, 3)], [(2, 2), None, None])
        self.score = nn.Conv2d(32, 2, 1)
        self.offsets = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.body(x)
        return self.offsets(y), self.score(y).softmax(1)[:, 1]


class _Refiner(nn.Module):
    """R-Net / O-Net: fixed-size crops ``(N, 3, S, S)`` -> ``(box offsets (N, 4), face probability (N,))``."""

    def __init__(self, body: nn.Sequential, flat: int, hidden: int) -> None:
        super().__init__()
        self.body = body
        self.dense = nn.Sequential(nn.Linear(flat, hidden), nn.PReLU(hidden))
        self.score = nn.Linear(hidden, 2)
        self.offsets = nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.body(x).permute(0, 3, 2, 1).flatten(1)  # the original (Caffe) nets' memory order
        y = self.dense(y)
        return self.offsets(y), self.score(y).softmax(1)[:, 1]


def _rnet() -> _Refiner:
    body = _cascade_net([(3, 28, 3), (28, 48, 3), (48, 64, 2)], [(3, 2), (3, 2), None])
    return _Refiner(body, 576, 128)


def _onet() -> _Refiner:
    body = _cascade_net([(3, 32, 3), (32, 64, 3), (64, 64, 3), (64, 128, 2)], [(3, 2), (3, 2), (2, 2), None])
    return _Refiner(body, 1152, 256)


def _rename(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """facenet-pytorch's parameter names -> this module's."""
    table = {
        "pnet.conv1": "pnet.body.0", "pnet.prelu1": "pnet.body.1", "pnet.conv2": "pnet.body.3",
        "pnet.prelu2": "pnet.body.4", "pnet.conv3": "pnet.body.5", "pnet.prelu3": "pnet.body.6",
        "pnet.conv4_1": "pnet.score", "pnet.conv4_2": "pnet.offsets",
        "rnet.conv1": "rnet.body.0", "rnet.prelu1": "rnet.body.1", "rnet.conv2": "rnet.body.3",
        "rnet.prelu2": "rnet.body.4", "rnet.conv3": "rnet.body.6", "rnet.prelu3": "rnet.body.7",
        "rnet.dense4": "rnet.dense.0", "rnet.prelu4": "rnet.dense.1", "rnet.dense5_1": "rnet.score",
        "rnet.dense5_2": "rnet.offsets",
        "onet.conv1": "onet.body.0", "onet.prelu1": "onet.body.1", "onet.conv2": "onet.body.3",
        "onet.prelu2": "onet.body.4", "onet.conv3": "onet.body.6", "onet.prelu3": "onet.body.7",
        "onet.conv4": "onet.body.9", "onet.prelu4": "onet.body.10", "onet.dense5": "onet.dense.0",
        "onet.prelu5": "onet.dense.1", "onet.dense6_1": "onet.score", "onet.dense6_2": "onet.offsets",
    }
    out = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix == "onet.dense6_3":  # the landmark output: not used
            continue
        out[f"{table[prefix]}.{leaf}"] = value
    return out


def _squares(boxes: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` boxes -> squares of their long side around the same centres."""
    centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    half = (boxes[:, 2:] - boxes[:, :2]).amax(1, keepdim=True) * 0.5
    return torch.cat([centre - half, centre + half], 1)


def _refine(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply a stage's box regression: ``(N, 4)`` boxes + ``(N, 4)`` offsets (fractions of the side)."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * size


class MTCNN(nn.Module):
    """MTCNN face detector with the packaged weights (eval mode, no gradients needed).

    Args:
        min_face: smallest face found (MTCNN box side, photo pixels).
        thresholds: score thresholds of P-, R- and O-Net.
        factor: ratio between pyramid scales.

    ``forward(image (B, 3, H, W) in [0, 1])`` returns a list of ``B`` tensors ``(N, 5)``: ``x0, y0,
    x1, y1, score`` in photo pixels (MTCNN's boxes: eyebrows to chin), best first. It reads the
    candidates back to the host (the cascade's shapes depend on the data).
    """

    def __init__(self, min_face: float = MIN_FACE, thresholds: tuple[float, float, float] = THRESHOLDS,
                 factor: float = PYRAMID_FACTOR) -> None:
        super().__init__()
        if not min_face >= 12:
            raise ValueError(f"min_face={min_face!r} must be >= 12 (P-Net's window)")
        if not 0 < factor < 1:
            raise ValueError(f"factor={factor!r} must be in (0, 1)")
        self.min_face, self.thresholds, self.factor = float(min_face), tuple(thresholds), float(factor)
        self.pnet, self.rnet, self.onet = PNet(), _rnet(), _onet()
        self.load_state_dict(_rename(torch.load(WEIGHTS, map_location="cpu", weights_only=True)))
        self.to(memory_format=torch.channels_last)  # ~2x faster convolutions of 3-48 channels on CPU
        self.eval()

    def scales(self, height: int, width: int) -> list[float]:
        """The pyramid: scales from ``12 / min_face`` (at most :data:`MAX_LEVEL_PIXELS` pixels)
        down until the short side is under 12 px."""
        scale = min(12.0 / self.min_face, math.sqrt(MAX_LEVEL_PIXELS / (height * width)))
        out = []
        while min(height, width) * scale >= 12:
            out.append(scale)
            scale *= self.factor
        return out

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        from portraitseg.boxes import batched_nms

        b, _, h, w = image.shape
        dtype = image.dtype if image.is_floating_point() else torch.float32

        def normed(x: torch.Tensor) -> torch.Tensor:  # the nets' input scaling and memory layout
            return ((x * 255.0 - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)

        cands, owners = [], []
        pyramid = _pyramid(image, self.scales(h, w))
        for scale, small in pyramid:
            offsets, prob = self.pnet(normed(small))
            idx = (prob >= self.thresholds[0]).nonzero()  # (n, 3): image, row, column
            if len(idx) == 0:
                continue
            cell = idx[:, [2, 1]].to(dtype)
            box = torch.cat([(2 * cell + 1) / scale, (2 * cell + 12) / scale], 1).floor()
            score = prob[idx[:, 0], idx[:, 1], idx[:, 2]]
            off = offsets[idx[:, 0], :, idx[:, 1], idx[:, 2]]
            keep = batched_nms(box, score, idx[:, 0], 0.5)
            cands.append(torch.cat([box[keep], score[keep, None], off[keep]], 1))
            owners.append(idx[keep, 0])
        empty = [image.new_zeros(0, 5, dtype=dtype) for _ in range(b)]
        if not cands:
            return empty
        cand, owner = torch.cat(cands), torch.cat(owners)
        keep = batched_nms(cand[:, :4], cand[:, 4], owner, 0.7)  # best first
        rank = torch.zeros_like(keep)
        for i in range(b):  # the best MAX_CANDIDATES of each photo
            mine = owner[keep] == i
            rank[mine] = torch.arange(int(mine.sum()), device=rank.device)
        keep = keep[rank < MAX_CANDIDATES]
        cand, owner = cand[keep], owner[keep]
        levels = _levels(image, pyramid)
        boxes, score = _squares(_refine(cand[:, :4], cand[:, 5:9])), cand[:, 4]
        for net, size, threshold, last in ((self.rnet, 24, self.thresholds[1], False),
                                           (self.onet, 48, self.thresholds[2], True)):
            if len(boxes) == 0:
                return empty
            crops = _crop(levels, boxes, owner, size)
            offsets, score = net(normed(crops))
            ok = score > threshold
            boxes, score, owner, offsets = boxes[ok], score[ok], owner[ok], offsets[ok]
            if last:
                boxes = _refine(boxes, offsets)
                keep = _nms_min(boxes, score, owner, 0.7)
            else:
                keep = batched_nms(boxes, score, owner, 0.7)
                boxes = _squares(_refine(boxes[keep], offsets[keep]))
                score, owner = score[keep], owner[keep]
                continue
            boxes, score, owner = boxes[keep], score[keep], owner[keep]
        return [torch.cat([boxes[owner == i], score[owner == i, None]], 1) for i in range(b)]


def _pyramid(image: torch.Tensor, scales: list[float]) -> list[tuple[float, torch.Tensor]]:
    """P-Net's levels ``(scale, image resized by it)``, area-averaged (as MTCNN's own resampling,
    OpenCV's ``INTER_AREA``): the first from the photo (a uint8 one read in bands,
    :func:`~portraitseg.sizing.area_resize`), the others from the first, so a large photo is read
    once, not once per level."""
    import torch.nn.functional as F

    from portraitseg.sizing import area_resize

    h, w = image.shape[-2:]
    out: list[tuple[float, torch.Tensor]] = []
    for scale in scales:
        size = (int(h * scale + 1), int(w * scale + 1))
        out.append((scale, F.adaptive_avg_pool2d(out[0][1], size) if out else area_resize(image, size)))
    return out


def _levels(
    image: torch.Tensor, pyramid: list[tuple[float, torch.Tensor]]
) -> list[tuple[float, torch.Tensor]]:
    """``(scale, image at that scale)`` for :func:`_crop` to take boxes from: the photo, then the
    pyramid's levels spaced at least 4x apart in area, down to about 64 px."""
    h, w = image.shape[-2:]
    out = [(1.0, image)]
    for scale, level in pyramid:
        if scale <= out[-1][0] * 0.5 and min(h, w) * scale >= 64:
            out.append((scale, level))
    return out


def _crop(levels: list[tuple[float, torch.Tensor]], boxes: torch.Tensor, owner: torch.Tensor,
          size: int) -> torch.Tensor:
    """``(N, 3, size, size)`` crops of ``boxes`` ``(N, 4)`` (photo pixels) from the photos ``owner``
    ``(N,)``, each from the coarsest of ``levels`` (:func:`_levels`) where it still spans
    ``2 * size`` pixels, averaging over each output pixel's footprint; outside the photo is black.
    The photo may be uint8 (the crops come out in [0, 1])."""
    from portraitseg.boxes import roi_align

    side = (boxes[:, 2:] - boxes[:, :2]).amax(1)
    pick = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    for i, (scale, _) in enumerate(levels):
        pick[side * scale >= 2 * size] = i
    out = boxes.new_zeros(len(boxes), 3, size, size)
    for i, (scale, img) in enumerate(levels):
        mine = pick == i
        if mine.any():
            rois = torch.cat([owner[mine, None].to(boxes.dtype), boxes[mine]], 1)
            crops = roi_align(img, rois, (size, size), spatial_scale=scale, sampling_ratio=-1, aligned=True)
            out[mine] = crops if img.is_floating_point() else crops.div_(255.0)  # a uint8 photo
    return out


def _nms_min(boxes: torch.Tensor, score: torch.Tensor, owner: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS with overlap = intersection / the smaller box's area (MTCNN's last stage: drops
    a box lying mostly inside a better one), per ``owner``; indices of the kept boxes, best first."""
    order = score.argsort(descending=True)
    boxes, owner = boxes[order], owner[order]
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)
    overlap = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-6)
    clash = (overlap > threshold) & (owner[:, None] == owner[None, :])
    keep = torch.ones(len(boxes), dtype=torch.bool)
    for i in range(len(boxes)):
        if keep[i]:
            later = clash[i].clone()
            later[: i + 1] = False
            keep &= ~later
    return order[keep.to(order.device)]


def calibrate_boxes(boxes: torch.Tensor, calibration: tuple[float, float, float, float] = BOX_CALIBRATION
                    ) -> torch.Tensor:
    """Detector boxes ``(..., 4)`` -> face boxes (skin + features extent), :data:`BOX_CALIBRATION`."""
    dx, dy, sx, sy = calibration
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    cx, cy = (boxes[..., 0] + boxes[..., 2]) * 0.5 + dx * w, (boxes[..., 1] + boxes[..., 3]) * 0.5 + dy * h
    return torch.stack([cx - 0.5 * sx * w, cy - 0.5 * sy * h, cx + 0.5 * sx * w, cy + 0.5 * sy * h], -1)


def find_faces(
    image: torch.Tensor, detector: nn.Module, max_faces: int, *,
    calibration: tuple[float, float, float, float] = BOX_CALIBRATION,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Face boxes of a batch of photos.

    Args:
        image: ``(B, 3, H, W)`` in [0, 1], or uint8 (0-255).
        detector: ``image -> list of B (N, 5) tensors`` (``x0, y0, x1, y1, score``, photo pixels),
            e.g. :class:`MTCNN`.
        max_faces: ``M``, boxes per photo (the best-scoring ones).
        calibration: detector box -> face box, see :func:`calibrate_boxes`.

    Returns:
        ``(boxes (B, M, 4) x0, y0, x1, y1 face boxes in photo pixels, scores (B, M), used (B, M)
        bool)``; unused rows are zero.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W), got shape {tuple(image.shape)}")
    if max_faces < 1:
        raise ValueError(f"max_faces={max_faces!r} must be >= 1")
    b = image.shape[0]
    dtype = image.dtype if image.is_floating_point() else torch.float32
    boxes = image.new_zeros(b, max_faces, 4, dtype=dtype)
    scores = image.new_zeros(b, max_faces, dtype=dtype)
    with torch.no_grad():
        found = detector(image)
    for i, det in enumerate(found):
        det = det[det[:, 4].argsort(descending=True)][:max_faces]
        boxes[i, : len(det)] = calibrate_boxes(det[:, :4].to(boxes.dtype), calibration)
        scores[i, : len(det)] = det[:, 4].to(scores.dtype)
    return boxes, scores, scores > 0


class FaceFinder(nn.Module):
    """:func:`find_faces` with a stored detector (default: :class:`MTCNN` with ``min_face``)."""

    def __init__(self, detector: nn.Module | None = None, *, min_face: float = MIN_FACE) -> None:
        super().__init__()
        self.detector = detector if detector is not None else MTCNN(min_face=min_face)

    def forward(self, image: torch.Tensor, max_faces: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return find_faces(image, self.detector, max_faces)


__all__ = ["MTCNN", "FaceFinder", "MIN_FACE", "PNet", "calibrate_boxes", "find_faces"]
