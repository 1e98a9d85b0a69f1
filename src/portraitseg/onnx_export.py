"""ONNX export of a trained :class:`~portraitseg.models.segmenter.Segmenter` (the engine of
``portraitseg export``; see :mod:`portraitseg.cli.export` for the graph's contract)."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from portraitseg.io import atomic_write, check_destination
from portraitseg.models.segmenter import Segmenter
from portraitseg.onnx_contract import (
    DEFAULT_OPSET,
    DEFAULT_TRACE_SIZE,
    INPUT_NAME,
    MISSING_ONNX,
    OPSET_RANGE,
    OUTPUT_NAME,
    PERSON_NAME,
)


class OnnxSegmenter(nn.Module):
    """The :class:`Segmenter` forward written so that tracing keeps every size symbolic.

    ``Segmenter.forward`` skips the pad with a Python ``if`` and chooses reflect or replicate
    padding from the input size; traced at one size, those choices would be frozen into the
    graph. Here the (possibly zero) reflect pad is always applied, which is identical for every
    ``H, W >= stride``. A model with a person head returns ``(logits, person)``.
    """

    def __init__(self, segmenter: Segmenter) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        seg = self.segmenter
        h, w = image.shape[-2], image.shape[-1]
        x = (image - seg.mean) / seg.std
        pad_h = (seg.stride - h % seg.stride) % seg.stride
        pad_w = (seg.stride - w % seg.stride) % seg.stride
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        logits = seg.net(x)
        if isinstance(logits, dict):  # torchvision segmentation models
            logits = logits["out"]
        logits = logits[:, :, :h, :w]
        if seg.person_head:
            return logits[:, : seg.classes], logits[:, seg.classes :]
        return logits


def export_onnx(
    segmenter: Segmenter,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    image_size: tuple[int, int] = (DEFAULT_TRACE_SIZE, DEFAULT_TRACE_SIZE),
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``segmenter`` as ONNX to ``path`` (atomically) with dynamic batch/height/width.

    Args:
        segmenter: a :class:`Segmenter` (put in eval mode here).
        path: the ``.onnx`` file to write.
        opset: ONNX opset, in :data:`OPSET_RANGE`.
        image_size: ``(H, W)`` of the example input the graph is traced with (any size works
            afterwards; the training size is a good choice).
        metadata: extra ``metadata_props`` (string values).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    try:
        import onnx
    except ModuleNotFoundError:
        raise RuntimeError(MISSING_ONNX) from None
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ValueError(f"opset {opset} not supported; choose {OPSET_RANGE[0]}..{OPSET_RANGE[1]}")
    h, w = (int(v) for v in image_size)
    if min(h, w) < segmenter.stride:
        raise ValueError(f"image size {h}x{w}: each side must be >= the model stride {segmenter.stride}")
    path = Path(path)
    check_destination(path)  # a folder, device or FIFO is refused before tracing
    model = OnnxSegmenter(segmenter.eval()).eval()
    example = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch", 2: "height", 3: "width"}
    outputs = [OUTPUT_NAME, PERSON_NAME] if segmenter.person_head else [OUTPUT_NAME]
    traced = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*will be removed.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            model, (example,), traced, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=outputs,
            dynamic_axes={name: axes for name in (INPUT_NAME, *outputs)}, do_constant_folding=True,
        )
    proto = onnx.load_from_string(traced.getvalue())
    for output, channels in zip(proto.graph.output, (segmenter.classes, 1), strict=False):
        output.type.tensor_type.shape.dim[1].dim_value = channels  # traced as symbolic
    props = {
        "portraitseg.input": "image: float32 (B, 3, H, W) RGB in [0, 1]; H, W >= stride",
        "portraitseg.output": "logits: float32 (B, K, H, W); softmax over K gives class probabilities",
        "portraitseg.stride": str(segmenter.stride),
        "portraitseg.classes": str(segmenter.classes),
        "portraitseg.person_head": str(int(segmenter.person_head)),
        **(metadata or {}),
    }
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    proto.doc_string = "portraitseg segmenter; see portraitseg.onnx_infer"
    onnx.checker.check_model(proto)
    atomic_write(path, proto.SerializeToString())
    return path


def parity(
    segmenter: Segmenter, onnx_path: str | os.PathLike, images: Sequence[np.ndarray | torch.Tensor]
) -> float:
    """Max |logit difference| onnxruntime vs PyTorch over ``images`` (each ``(B, 3, H, W)``),
    over both outputs of a model with a person head."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for image in images:
        x = torch.as_tensor(image, dtype=torch.float32)
        with torch.no_grad():
            refs = [t.numpy() for t in segmenter.eval().segment(x) if t is not None]
        names = [OUTPUT_NAME, PERSON_NAME][: len(refs)]
        for out, ref in zip(session.run(names, {INPUT_NAME: x.numpy()}), refs, strict=True):
            if out.shape != ref.shape:
                raise AssertionError(f"onnxruntime output {out.shape} != PyTorch {ref.shape}")
            worst = max(worst, float(np.abs(out - ref).max()))
    return worst
