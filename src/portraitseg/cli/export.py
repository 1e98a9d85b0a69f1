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
import importlib
import importlib.util
import json
import sys
from typing import Any

from portraitseg.argtypes import int_in
from portraitseg.onnx_contract import (
    DEFAULT_OPSET,
    DEFAULT_TRACE_SIZE,
    MISSING_ONNX,
    OPSET_RANGE,
    PARITY_ATOL,
)

#: largest --image-size side accepted (the trace runs the model once at this size on the CPU)
MAX_TRACE_SIZE = 4096

#: the export engine, imported on first use so the parser and its errors need no PyTorch
_ENGINE = ("OnnxSegmenter", "export_onnx", "parity")


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        return getattr(importlib.import_module("portraitseg.onnx_export"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            "logits (B, K, H, W) (and person (B, 1, H, W): person-matte logits, for a model with a "
            "person head). See portraitseg.onnx_infer for inference with onnxruntime + numpy."
        ),
    )
    parser.add_argument("--ckpt", required=True, metavar="PATH",
                        help="a checkpoint from `python train.py`, an exported weights file "
                             "(loaded with torch.load(weights_only=True)), or `default` (the bundled model)")
    parser.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    parser.add_argument("--opset", type=int_in(*OPSET_RANGE), default=DEFAULT_OPSET, metavar="N",
                        help=f"ONNX opset {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (default {DEFAULT_OPSET})")
    parser.add_argument("--image-size", type=int_in(1, MAX_TRACE_SIZE), nargs=2, metavar=("H", "W"),
                        help="size of the traced example input (default: the training size, else "
                             f"{DEFAULT_TRACE_SIZE}); the model accepts any size afterwards")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the onnxruntime vs PyTorch parity check")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """``portraitseg export``; returns the exit status (2: bad arguments or model file)."""
    from portraitseg.io import InputError, check_destination, check_output_not_input
    from portraitseg.models.checkpoint import load_segmenter, resolve_model_path

    try:
        ckpt = resolve_model_path(args.ckpt)
        check_output_not_input(args.onnx, "--onnx", {"--ckpt": ckpt})
        check_destination(args.onnx)  # a folder, device node or FIFO is refused
        if importlib.util.find_spec("onnx") is None:
            raise InputError(MISSING_ONNX)
        segmenter, info = load_segmenter(ckpt)
    except (FileNotFoundError, InputError) as err:
        print(f"portraitseg export: error: {err}", file=sys.stderr)
        return 2
    import torch

    from portraitseg.onnx_export import export_onnx, parity

    trained = info.get("image_size")
    size = tuple(args.image_size) if args.image_size else (trained or DEFAULT_TRACE_SIZE,) * 2
    metadata = {
        "portraitseg.class_names": json.dumps(info.get("class_names")),
        "portraitseg.image_size": str(trained or ""),
        "portraitseg.model": json.dumps(info.get("model"), default=str),
        "portraitseg.source": ckpt.name,
    }
    try:
        path = export_onnx(segmenter, args.onnx, args.opset, size, metadata)
    except ValueError as err:
        print(f"portraitseg export: error: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as err:
        print(f"portraitseg export: error: {err}", file=sys.stderr)
        return 1
    mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({mb:.1f} MB, opset {args.opset}, traced at {size[0]}x{size[1]})")
    if args.no_check:
        return 0
    if importlib.util.find_spec("onnxruntime") is None:
        print("onnxruntime not installed: parity check skipped (pip install 'portraitseg[export]')",
              file=sys.stderr)
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
