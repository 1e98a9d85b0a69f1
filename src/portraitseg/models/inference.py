"""The inference artifact: a model file's network traced to TorchScript, loaded with PyTorch alone.

Building a segmenter from a weights file imports segmentation-models-pytorch and timm (about 3 s
on a 2-core machine, more than the whole render of a photo). A weights file ``<name>.pt`` may have
``<name>.ts`` beside it: its network (``Segmenter.net``) traced with :func:`torch.jit.trace`
(fp16 parameters where the weights file holds fp16 values), plus what rebuilds the
:class:`Segmenter` around it and the info of
:func:`~portraitseg.models.checkpoint.load_segmenter`. The bundled model ships with one; write one
for any model file with::

    python -m portraitseg.models.inference path/to/model.pt      # writes path/to/model.ts

:func:`load_inference_segmenter` uses the artifact when it matches the weights file (its sha256)
and this package's version, and otherwise builds the full model, with a warning when an artifact
is there but unusable (or missing beside the bundled model). The traced network accepts any input
size (checked against the full model at 256 and 320x192 px when written, and by the tests).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from portraitseg._version import __version__
from portraitseg.io import (
    InputError,
    atomic_write,
    check_destination,
    check_output_not_input,
    check_zip,
    sha256_file,
)
from portraitseg.models.segmenter import Segmenter

#: suffix of the artifact beside a weights file
ARTIFACT_SUFFIX = ".ts"
#: name of the metadata record inside the TorchScript archive
META_NAME = "portraitseg.json"
#: input sizes the trace is checked at when written (square trace size first)
CHECK_SIZES = ((256, 256), (320, 192))


class ArtifactWarning(UserWarning):
    """An inference artifact could not be used; the full model was built instead."""


class TracedNet(nn.Module):
    """A traced network run without TorchScript's profiling optimizer (its first calls would
    otherwise re-optimize the graph, several times the cost of a one-photo render)."""

    def __init__(self, script: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.script = script

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized ``(B, 3, H, W)`` -> logits ``(B, K (+1), H, W)``."""
        with torch.jit.optimized_execution(False):
            return self.script(x)


def artifact_path(weights: str | os.PathLike) -> Path:
    """``<weights without suffix>.ts``."""
    return Path(weights).with_suffix(ARTIFACT_SUFFIX)


def write_artifact(weights: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Trace the network of a checkpoint or weights file and write it with its metadata.

    Raises:
        CheckpointError / FileNotFoundError: ``weights`` is not a model file.
        RuntimeError: the trace does not reproduce the full model (it depends on the input size).
    """
    from portraitseg.models.checkpoint import load_segmenter

    weights = Path(weights)
    out = artifact_path(weights) if out is None else Path(out)
    check_output_not_input(out, "--out", {"WEIGHTS": weights})
    check_destination(out)  # a folder, device or FIFO is refused before tracing
    segmenter, info = load_segmenter(weights)
    size = info.get("image_size")
    side = int(max(size) if isinstance(size, (list, tuple)) and size else size or CHECK_SIZES[0][0])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation notice
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # checked below at other sizes
        script = torch.jit.trace(segmenter.net, torch.rand(1, 3, side, side), check_trace=False)
        for h, w in ((side, side), *CHECK_SIZES):
            x = torch.rand(1, 3, h, w)
            error = (script(x) - segmenter.net(x)).abs().max().item()
            if error > 1e-4:
                raise RuntimeError(f"{weights}: the traced network differs from the model at {h}x{w} "
                                   f"(max |logit difference| {error:.3g}); it cannot be traced")
    meta = {
        "portraitseg_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "weights_sha256": sha256_file(weights),
        "segmenter": {"classes": segmenter.classes, "stride": segmenter.stride,
                      "person_head": segmenter.person_head,
                      "mean": segmenter.mean.flatten().tolist(), "std": segmenter.std.flatten().tolist()},
        "info": {k: v for k, v in info.items() if k != "path"},
    }
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit.save's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(_compact(script), buf, _extra_files={META_NAME: json.dumps(meta)})
    return atomic_write(out, buf.getbuffer(), check=check_zip)  # the one writer: verified, atomic


def _compact(script: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """fp16 parameters when that loses nothing (a weights file exported in fp16), else as is."""
    tensors = [t for t in (*script.parameters(), *script.buffers()) if t.is_floating_point()]
    exact = all(torch.equal(t, t.half().float()) for t in tensors)
    return script.half() if exact else script


def read_artifact(path: Path, weights: Path) -> tuple[Segmenter, dict[str, Any]]:
    """Load the artifact ``path`` of ``weights``.

    Raises:
        ValueError: the artifact is not for this weights file or this package version, or is
            damaged (the message says which).
    """
    extra = {META_NAME: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            script = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        meta = json.loads(extra[META_NAME])
        seg = meta["segmenter"]
    except Exception as err:  # noqa: BLE001 - TorchScript reports a damaged archive in many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"it cannot be read ({first})") from None
    if meta.get("portraitseg_version") != __version__:
        raise ValueError(f"it was written by portraitseg {meta.get('portraitseg_version')}, this is "
                         f"{__version__}")
    if meta.get("weights_sha256") != sha256_file(weights):
        raise ValueError(f"it was traced from another {weights.name} (sha256 differs)")
    net = TracedNet(script.float().eval())
    segmenter = Segmenter(net, int(seg["classes"]), seg["mean"], seg["std"], int(seg["stride"]),
                          bool(seg["person_head"]))
    info = dict(meta["info"], path=str(weights))
    return segmenter.eval(), info


def load_inference_segmenter(weights: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The segmenter of a model file for inference: from its artifact when usable (PyTorch only),
    else the full model (:func:`~portraitseg.models.checkpoint.load_segmenter`).

    Returns:
        ``(segmenter in eval mode, info)`` as :func:`~portraitseg.models.checkpoint.load_segmenter`.

    Raises:
        as :func:`~portraitseg.models.checkpoint.load_segmenter` (the full model's errors).
    """
    from portraitseg.models.checkpoint import DEFAULT_MODEL

    weights = Path(weights)
    artifact = artifact_path(weights)
    if artifact.is_file() and weights.is_file():
        try:
            return read_artifact(artifact, weights)
        except ValueError as err:
            warnings.warn(f"{artifact}: not used, {err}; building the full model instead (slower "
                          f"start). Rewrite it with `python -m portraitseg.models.inference {weights}`",
                          ArtifactWarning, stacklevel=2)
    elif weights.resolve() == DEFAULT_MODEL.resolve() and weights.is_file():
        warnings.warn(f"{artifact} is missing; building the full model instead (slower start). Write "
                      f"it with `python -m portraitseg.models.inference {weights}`",
                      ArtifactWarning, stacklevel=2)
    from portraitseg.models.checkpoint import load_segmenter

    return load_segmenter(weights, map_location="cpu")


def main(argv: list[str] | None = None) -> int:
    """``python -m portraitseg.models.inference WEIGHTS [--out FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m portraitseg.models.inference",
                                     description="Write the TorchScript inference artifact of a model file.")
    parser.add_argument("weights", help="a checkpoint from `python train.py` or an exported weights file")
    parser.add_argument("--out", help="artifact path (default: the weights path with .ts)")
    args = parser.parse_args(argv)
    try:
        path = write_artifact(args.weights, args.out)
    except (FileNotFoundError, InputError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
