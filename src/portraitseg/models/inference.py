"""Inference with a segmenter: pass 1 on a letterboxed photo (:func:`segment_letterboxed`, flip
TTA in :func:`run_model`), and the inference artifact: a model file's network traced to
TorchScript, loaded with PyTorch alone.

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
import torch.nn.functional as F
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
from portraitseg.sizing import long_side, resize_tensor

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


def segment_letterboxed(
    model: nn.Module, image: torch.Tensor, size: int, *, tta: bool = False,
    flip_perm: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pass 1: the model on the photo letterboxed to ``size x size`` (long side ``size``, black
    padding bottom/right, the eval transform's layout), the padding cropped off.

    Args:
        model: a :class:`~portraitseg.models.Segmenter` (``segment``) or any ``image -> logits`` net.
        image: ``(B, 3, H, W)`` in [0, 1], or uint8 (read in part, :func:`resize_tensor`).
        tta: average with the mirrored photo's prediction; ``flip_perm`` (``(K,)`` long, on the
            image's device) swaps left/right classes of the mirrored parse (None: no swap).

    Returns:
        ``(probs (B, K, h, w), person (B, 1, h, w) probability or None)``, ``(h, w) =
        long_side(H, W, size)``.
    """
    h, w = long_side(image.shape[-2], image.shape[-1], size)
    x = F.pad(resize_tensor(image, (h, w)), (0, size - w, 0, size - h))
    logits, person = run_model(model, x, tta=tta, flip_perm=flip_perm)
    probs = logits[..., :h, :w].float().softmax(1)
    return probs, None if person is None else person[..., :h, :w].float().sigmoid()


def run_model(
    model: nn.Module, x: torch.Tensor, *, tta: bool = False, flip_perm: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(class logits (B, K, h, w), person logit (B, 1, h, w) or None)`` of ``x (B, 3, h, w)``,
    flip-averaged with ``tta`` (the mirrored square's prediction of column j is at column j again
    once un-flipped, so letterbox padding on the right stays on the right)."""
    run = getattr(model, "segment", None) or (lambda t: (model(t), None))
    logits, person = run(x)
    if tta:
        m_logits, m_person = run(x.flip(-1))
        m_logits = m_logits.flip(-1)
        if flip_perm is not None:
            m_logits = m_logits.index_select(1, flip_perm)
        logits = 0.5 * (logits + m_logits)
        if person is not None:
            person = 0.5 * (person + m_person.flip(-1))
    return logits, person


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
