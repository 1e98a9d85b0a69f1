"""What :meth:`PortraitPipeline.from_pretrained <portraitseg.pipeline.PortraitPipeline.from_pretrained>`
assembles from a model file and a preset name: the network (the bundled model from its TorchScript
artifact, with PyTorch alone), the renderer, the kept classes and the options the model file
records."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from portraitseg.classes import CLASS_NAMES, model_class_ids
from portraitseg.config import DEFAULT_MODEL_SIZE
from portraitseg.inputs import PipelineError
from portraitseg.presets import render_preset


def stored_size(info: dict[str, Any]) -> int | None:
    """The training input size (long side) a model file records, if any."""
    size = info.get("image_size")
    if isinstance(size, (list, tuple)) and size:
        return int(max(size))
    if isinstance(size, (int, float)) and size > 0:
        return int(size)
    return None


def pretrained_parts(
    model: str | os.PathLike, render: str | nn.Module, render_options: dict[str, Any] | None,
    keep: str | Sequence[int | str] | None, person_model: str | os.PathLike | None, threads: int | None,
    options: dict[str, Any],
) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """``(network, renderer, pipeline options)`` for
    :meth:`~portraitseg.pipeline.PortraitPipeline.from_pretrained` (its arguments, same meaning);
    sets the thread count first."""
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
        from portraitseg.subject.person_model import load_person_model

        person, person_info = load_person_model(person_model)
        options["person_model"] = person
        options.setdefault("person_model_size", stored_size(person_info) or DEFAULT_MODEL_SIZE)
    options.setdefault("model_size", stored_size(info) or DEFAULT_MODEL_SIZE)
    options.setdefault("class_names", info.get("class_names"))
    return net, renderer, options


__all__ = ["pretrained_parts", "stored_size"]
