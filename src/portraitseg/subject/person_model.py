"""A separate 2-class person segmenter (``--person-ckpt``) as the subject: its mask united with the
kept face classes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from portraitseg.classes import NUM_CLASSES, SUBJECT_CLASSES
from portraitseg.render.alpha import check_keep, check_range
from portraitseg.render.blur import check_blur_input
from portraitseg.render.options import PERSON_DEFAULTS
from portraitseg.sizing import long_side, resize_tensor
from portraitseg.subject.grabcut import _check_inputs, _small_image, combine_person


def load_person_model(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[torch.nn.Module, dict]:
    """Load a 2-class person segmenter (``--person-ckpt``) with :func:`load_segmenter`.

    Raises:
        CheckpointError: the file is not a checkpoint, or its model does not have 2 classes.
    """
    from portraitseg.models.checkpoint import CheckpointError, load_segmenter

    model, info = load_segmenter(path, map_location)
    classes = int(info["model"].get("classes", NUM_CLASSES))
    if classes != 2:
        raise CheckpointError(
            f"{path}: a person model must have 2 classes (background, person), this one has "
            f"{classes}; pass a 2-class person segmenter, trained with `python train.py "
            "experiment=person data.root=<images/ + masks/ folder>` (a face-parsing model goes to --ckpt)"
        )
    return model, info


def person_alpha_from_model(
    image: torch.Tensor,
    person: torch.nn.Module | torch.Tensor,
    probs: torch.Tensor | None = None,
    keep: Sequence[int] = SUBJECT_CLASSES,
    *,
    input_size: int = 512,
    work_size: int = PERSON_DEFAULTS["work_size"],
) -> tuple[torch.Tensor, list[str]]:
    """Subject alpha = a person segmenter's mask ∪ the kept face classes (``--person-ckpt``).

    Args:
        image: photo ``(B, 3, H, W)`` float in [0, 1].
        person: a 2-class segmenter (image ``(B, 3, h, w)`` -> logits ``(B, 2, h, w)``, run on the
            photo resized to ``input_size`` on the long side, without gradients) or its logits
            ``(B, 2, h, w)`` already computed.
        probs: optional face-parse probabilities ``(B, K, h, w)``; then ``alpha = max(P(person),
            P(kept)) * (1 - P(face classes not kept))``, else ``alpha = P(person)``.
        keep: kept face classes (ignored without ``probs``).
        input_size: the person model's input long side (its training ``image_size``).
        work_size: long side of the returned alpha's grid (as :func:`person_alpha`).

    Returns:
        ``(alpha (B, 1, h', w'), warnings)``; a warning when the model finds no person.
    """
    check_blur_input(image)
    size = long_side(image.shape[-2], image.shape[-1], int(work_size), upscale=False)
    with torch.no_grad():
        if isinstance(person, torch.nn.Module):
            model_size = long_side(image.shape[-2], image.shape[-1], int(input_size), upscale=False)
            x = _small_image(image, model_size)
            param = next(person.parameters(), None)
            if param is not None:
                x = x.to(device=param.device, dtype=param.dtype)
            logits = person(x)
        else:
            logits = person
        _check_inputs(image, logits, "person logits")
        if logits.shape[1] != 2:
            raise ValueError(f"a person model must output 2 classes (background, person), got logits of "
                             f"shape {tuple(logits.shape)}")
        p_person = resize_tensor(logits.detach().float().softmax(1)[:, 1:2], size).to(image.device)
        pw = None
        if probs is not None:
            _check_inputs(image, probs, "probs")
            check_range(probs, "probs", hint="; pass softmax probabilities, not logits")
            keep = check_keep(keep, probs.shape[1])
            pw = resize_tensor(probs.detach().float(), size).clamp(0.0, 1.0).to(image.device)
        alpha = combine_person(p_person, pw, keep)
    warnings = []
    for b in range(image.shape[0]):
        if float(p_person[b].max()) < 0.5:
            prefix = f"image {b}: " if image.shape[0] > 1 else ""
            warnings.append(f"{prefix}person model found no person (max probability "
                            f"{float(p_person[b].max()):.2f}); only the face-parse mask stays sharp")
    return alpha.to(image.dtype), warnings


__all__ = ["load_person_model", "person_alpha_from_model"]
