"""``portraitseg export``: a trained segmenter as an ONNX model, for apps that cannot ship PyTorch.

    portraitseg export --ckpt outputs/train/runs/<time>/checkpoints/last.ckpt --onnx model.onnx

The ONNX graph has the segmenter's contract: input ``image`` float32 ``(B, 3, H, W)`` RGB in
[0, 1], output ``logits`` float32 ``(B, K, H, W)``; batch, height and width are dynamic axes.
Normalization and the padding to a multiple of the network stride are inside the graph, so any
``H, W >= stride`` (32 for every arch but ``tv_fcn``, 8) works, not only the traced size. The
model file also carries metadata (``metadata_props``): class names, training image size, stride.

Opset: 17 by default -- the newest opset that onnxruntime >= 1.14, OpenVINO, TensorRT 8.6 and
onnxruntime-web all run; nothing in these models needs a newer one (``--opset`` 13..20).
Exported with PyTorch's TorchScript-based exporter (``dynamo=False``), which needs only the
``onnx`` package; the result is checked against PyTorch with onnxruntime when it is installed.

See :mod:`portraitseg.onnx_infer` for inference with onnxruntime + numpy only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from portraitseg.models.segmenter import Segmenter

DEFAULT_OPSET = 17
OPSET_RANGE = (13, 20)
#: traced input size when neither --image-size nor the checkpoint gives one
DEFAULT_TRACE_SIZE = 256
INPUT_NAME, OUTPUT_NAME = "image", "logits"
#: max |logit difference| onnxruntime vs PyTorch accepted by the export check (float32)
PARITY_ATOL = 1e-4


class OnnxSegmenter(nn.Module):
    """The :class:`Segmenter` forward written so that tracing keeps every size symbolic.

    ``Segmenter.forward`` skips the pad with a Python ``if`` and chooses reflect or replicate
    padding from the input size; traced at one size, those choices would be frozen into the
    graph. Here the (possibly zero) reflect pad is always applied, which is identical for every
    ``H, W >= stride``.
    """

    def __init__(self, segmenter: Segmenter) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        seg = self.segmenter
        h, w = image.shape[-2], image.shape[-1]
        x = (image - seg.mean) / seg.std
        pad_h = (seg.stride - h % seg.stride) % seg.stride
        pad_w = (seg.stride - w % seg.stride) % seg.stride
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        logits = seg.net(x)
        if isinstance(logits, dict):  # torchvision segmentation models
            logits = logits["out"]
        return logits[:, :, :h, :w]


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
        raise RuntimeError(
            "ONNX export needs the onnx package: pip install onnx onnxruntime "
            "(or pip install 'portraitseg[dev]')"
        ) from None
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ValueError(f"opset {opset} not supported; choose {OPSET_RANGE[0]}..{OPSET_RANGE[1]}")
    h, w = (int(v) for v in image_size)
    if min(h, w) < segmenter.stride:
        raise ValueError(f"image size {h}x{w}: each side must be >= the model stride {segmenter.stride}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    model = OnnxSegmenter(segmenter.eval()).eval()
    example = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=".*will be removed.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        (output,) = proto.graph.output
        output.type.tensor_type.shape.dim[1].dim_value = segmenter.classes  # traced as symbolic
        props = {
            "portraitseg.input": "image: float32 (B, 3, H, W) RGB in [0, 1]; H, W >= stride",
            "portraitseg.output": "logits: float32 (B, K, H, W); softmax over K gives class probabilities",
            "portraitseg.stride": str(segmenter.stride),
            "portraitseg.classes": str(segmenter.classes),
            **(metadata or {}),
        }
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)
        proto.doc_string = "portraitseg segmenter; see portraitseg.onnx_infer"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def parity(
    segmenter: Segmenter, onnx_path: str | os.PathLike, images: Sequence[np.ndarray | torch.Tensor]
) -> float:
    """Max |logit difference| onnxruntime vs PyTorch over ``images`` (each ``(B, 3, H, W)``)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for image in images:
        x = torch.as_tensor(image, dtype=torch.float32)
        with torch.no_grad():
            ref = segmenter.eval()(x).numpy()
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        if out.shape != ref.shape:
            raise AssertionError(f"onnxruntime output {out.shape} != PyTorch {ref.shape}")
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


# --------------------------------------------------------------------------------------------
# command line


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``portraitseg export`` and set ``func`` to :func:`run`."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained segmenter to ONNX (dynamic batch, height, width)",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog=(
            "The graph takes image float32 (B, 3, H, W) RGB in [0, 1] (any H, W >= 32) and returns "
            "logits (B, K, H, W). See portraitseg.onnx_infer for inference with onnxruntime + numpy."
        ),
    )
    parser.add_argument("--ckpt", required=True, metavar="PATH",
                        help="a checkpoint from `python train.py` or an exported weights file "
                             "(loaded with torch.load(weights_only=True))")
    parser.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                        help=f"ONNX opset {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (default {DEFAULT_OPSET})")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="size of the traced example input (default: the training size, else "
                             f"{DEFAULT_TRACE_SIZE}); the model accepts any size afterwards")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the onnxruntime vs PyTorch parity check")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from portraitseg.io import InputError
    from portraitseg.models.checkpoint import load_segmenter

    try:
        segmenter, info = load_segmenter(args.ckpt)
    except (FileNotFoundError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    trained = info.get("image_size")
    size = tuple(args.image_size) if args.image_size else (trained or DEFAULT_TRACE_SIZE,) * 2
    metadata = {
        "portraitseg.class_names": json.dumps(info.get("class_names")),
        "portraitseg.image_size": str(trained or ""),
        "portraitseg.model": json.dumps(info.get("model"), default=str),
        "portraitseg.source": Path(args.ckpt).name,
    }
    try:
        path = export_onnx(segmenter, args.onnx, args.opset, size, metadata)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({mb:.1f} MB, opset {args.opset}, traced at {size[0]}x{size[1]})")
    if args.no_check:
        return 0
    try:
        import onnxruntime  # noqa: F401
    except ModuleNotFoundError:
        print("onnxruntime not installed: parity check skipped", file=sys.stderr)
        return 0
    g = torch.Generator().manual_seed(0)
    h, w = size
    odd = (max(segmenter.stride, h - 13), max(segmenter.stride, w + 7))  # not a stride multiple
    inputs = [torch.rand(1, 3, h, w, generator=g), torch.rand(2, 3, *odd, generator=g)]
    diff = parity(segmenter, path, inputs)
    ok = diff <= PARITY_ATOL
    print(f"parity onnxruntime vs PyTorch: max |logit diff| {diff:.2e} at {h}x{w} and {odd[0]}x{odd[1]} "
          f"({'ok' if ok else f'FAILED, above {PARITY_ATOL:g}'})")
    return 0 if ok else 1
