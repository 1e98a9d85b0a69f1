"""The two passes of the pipeline as one pure function: the whole photo, then each face.

:func:`two_pass_parse` is what :meth:`portraitseg.pipeline.PortraitPipeline.parse` runs with its
options: pass 1 segments the photo letterboxed at the model's size (person matte + coarse parse);
faces are found (a face detector, or the head regions of the coarse parse); pass 2 parses each
face crop at ``face_size`` and pastes it back softly on the parse grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from portraitseg.models.inference import run_model, segment_letterboxed
from portraitseg.sizing import long_side
from portraitseg.subject.crops import crop_faces, frame_faces, grid_window, paste_faces
from portraitseg.subject.heads import face_squares, find_heads


def two_pass_parse(
    segmenter: nn.Module,
    image: torch.Tensor,
    *,
    model_size: int,
    parse_size: int,
    face_size: int,
    max_faces: int,
    flip_perm: torch.Tensor,
    head: torch.Tensor,
    face_pass: bool = True,
    face_finder: nn.Module | None = None,
    tta: bool = False,
    sync_free: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Both passes of a Helen parser (pass 1 only with ``face_pass=False``).

    Args:
        segmenter: ``image -> logits`` (a two-output model's ``segment`` gives the person matte).
        image: ``(B, 3, H, W)`` in [0, 1].
        model_size: pass-1 long side; parse_size: long side of the parse grid (not upscaled);
        face_size: side of the face crops; max_faces: crops per photo at most.
        flip_perm: class permutation of a horizontal flip (``tta``); head: ``(K,)`` bool, the
            head classes :func:`~portraitseg.subject.heads.find_heads` reads (``face_finder``
            None).
        face_finder: a face detector ``(image, max_faces) -> (boxes, scores, found)``, or None:
            the head regions of the coarse parse.
        sync_free: parse all ``max_faces`` crops, unused ones weighted 0 (nothing read back to
            the host); default: on accelerators only.

    Returns:
        ``(parse (B, K, h, w) on the parse grid, person (B, 1, h1, w1) or None, faces (B, M, 4)
        squares in photo pixels, face_used (B, M) bool)``.
    """
    big = (image.shape[-2], image.shape[-1])
    probs, person = segment_letterboxed(segmenter, image, model_size, tta=tta, flip_perm=flip_perm)
    grid = long_side(*big, parse_size, upscale=False)
    coarse = probs
    if grid != tuple(probs.shape[-2:]):
        coarse = F.interpolate(probs, size=grid, mode="bilinear", align_corners=False)
    b, m = image.shape[0], max_faces
    if not face_pass:
        none = torch.zeros(b, m, dtype=torch.bool, device=image.device)
        return coarse, person, image.new_zeros(b, m, 4), none
    if face_finder is None:
        boxes, area = find_heads(probs, head, m)
        squares, use = face_squares(boxes, area, tuple(probs.shape[-2:]), big, face_size=face_size)
    else:
        boxes, _, found = face_finder(image, m)
        squares, gain = frame_faces(boxes, big, tuple(probs.shape[-2:]), face_size=face_size)
        use = found & gain
    window = None
    crop_squares, crop_use = squares, use
    if not (sync_free if sync_free is not None else image.device.type != "cpu"):
        # reading back is free on the CPU: parse and paste real faces only
        count = int(use.sum(1).max())
        if count == 0:
            return coarse, person, squares, use
        order = use.float().argsort(dim=1, descending=True, stable=True)[:, :count]
        crop_squares = squares.gather(1, order[..., None].expand(-1, -1, 4))
        crop_use = use.gather(1, order)
        window = grid_window(crop_squares[crop_use], big, grid)
    crops = crop_faces(image, crop_squares, face_size)
    logits, _ = run_model(segmenter, crops, tta=tta, flip_perm=flip_perm)
    fine = logits.float().softmax(1).view(b, crop_squares.shape[1], *logits.shape[1:])
    parse = paste_faces(coarse, fine, crop_squares, crop_use, big, window=window)
    return parse, person, squares, use


__all__ = ["two_pass_parse"]
