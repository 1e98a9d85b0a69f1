"""Load trained segmenters safely and export them as small weights-only files.

Two kinds of file are ours:

- a Lightning checkpoint of :class:`portraitseg.lit.SegmentationModule`, written by
  ``python train.py`` (``outputs/<task>/runs/<time>/checkpoints/{last,epochNNN}.ckpt``);
- a weights-only export (``format: portraitseg.weights``) written by :func:`export_weights`
  (``python -m portraitseg.models.checkpoint --ckpt X.ckpt --out model.pt``): an fp16 state dict,
  the model config, the class names, the validation metrics and where it came from.

Both are read with ``torch.load(weights_only=True)`` only: tensors and plain containers, never
arbitrary pickled objects. The network is rebuilt from the stored model config by
:func:`portraitseg.models.create_model` (the only constructor a file may name) with
``encoder_weights=None``, so loading never downloads anything.

Reading is in :mod:`portraitseg.models.loading` (its names are importable from here too); the
export, the bundled default model and the command line are here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from portraitseg._version import __version__
from portraitseg.io import (
    InputError,
    WriteError,
    atomic_write,
    check_destination,
    check_output_not_input,
    sha256_file,
    write_torch,
)
from portraitseg.models.loading import (
    EXPECTED,
    FORMAT,
    FORMAT_VERSION,
    MODEL_TARGETS,
    CheckpointError,
    StoredModel,
    build_segmenter,
    load_segmenter,
    load_weights,
    read_model_file,
)

__all__ = [
    "DEFAULT_MODEL", "EXPECTED", "FORMAT", "FORMAT_VERSION", "MODEL_TARGETS", "CheckpointError",
    "StoredModel", "build_segmenter", "default_model_path", "export_weights", "load_segmenter",
    "load_weights", "main", "model_card", "read_model_file", "resolve_model_path",
]

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "weights" / "default.pt"


def export_weights(
    ckpt_path: str | os.PathLike,
    out_path: str | os.PathLike,
    dtype: torch.dtype = torch.float16,
    metrics: Mapping[str, float] | None = None,
) -> Path:
    """Write a weights-only file of a checkpoint: state dict in ``dtype`` + what rebuilds it.

    The file holds ``format``, ``version``, ``model`` (config), ``state_dict`` (floating tensors
    cast to ``dtype``), ``class_names``, ``image_size``, ``metrics`` (``metrics`` if given, else
    the validation scores stored in the checkpoint) and ``source`` (file name, sha256, epoch,
    step, versions).
    It loads with :func:`load_segmenter` (cast back to fp32). Written atomically.
    """
    ckpt_path, out_path = Path(ckpt_path), Path(out_path)
    check_output_not_input(out_path, "out_path", {"ckpt_path": ckpt_path})
    check_destination(out_path)  # a folder, device or FIFO is refused before any work
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    stored = read_model_file(ckpt_path)
    build_segmenter(stored)  # refuse to export something that does not load
    info = stored.info
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": info["model"],
        "state_dict": {k: v.to(dtype) if v.is_floating_point() else v
                       for k, v in stored.state_dict.items()},
        "dtype": str(dtype).removeprefix("torch."),
        "class_names": info["class_names"],
        "image_size": info["image_size"],
        "metrics": {str(k): float("nan") if v is None else float(v)  # JSON null = NaN
                    for k, v in (metrics or info["metrics"]).items()},
        "source": {
            **info["source"],
            "file": ckpt_path.name,
            "sha256": sha256_file(ckpt_path),
            "epoch": info["epoch"],
            "global_step": info["global_step"],
            "portraitseg_version": __version__,
            "torch_version": torch.__version__.split("+")[0],
        },
    }
    return write_torch(out_path, payload)


def default_model_path() -> Path | None:
    """The model bundled with the package (``portraitseg/weights/default.pt``), if installed."""
    return DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """``None`` or ``"default"`` -> the bundled model (clear error if absent); else ``Path(model)``."""
    if model is not None and str(model) != "default":
        return Path(model)
    found = default_model_path()
    if found is None:
        raise FileNotFoundError(
            f"no bundled default model: {DEFAULT_MODEL} is not installed (a source checkout or a "
            "build without it). Pass a model explicitly: a checkpoint written by `python train.py` "
            "(outputs/<task>/runs/<time>/checkpoints/last.ckpt) or a weights file exported with "
            "`python -m portraitseg.models.checkpoint --ckpt <file.ckpt> --out <model.pt>`"
        )
    return found


def model_card(info: Mapping[str, Any], weights_path: str | os.PathLike) -> str:
    """A markdown model card draft for an exported file (``info`` as from :func:`load_segmenter`)."""
    weights_path = Path(weights_path)
    size_mb = weights_path.stat().st_size / 1e6 if weights_path.is_file() else float("nan")
    model = {k: v for k, v in info["model"].items() if k != "_target_"}
    metrics = info.get("metrics") or {}
    lines = [
        f"# {weights_path.name}",
        "",
        f"- Model: `{json.dumps(model)}` ({size_mb:.1f} MB, fp16 weights, loaded as fp32)",
        f"- Classes: {', '.join(info['class_names'])}",
        f"- Trained from: `{info['source'].get('file')}` (epoch {info.get('epoch')}, step "
        f"{info.get('global_step')}, sha256 {str(info['source'].get('sha256'))[:12]}...)",
        "- Data: TODO (dataset, split, command)",
        "",
        "## Validation metrics",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())]
    else:
        lines.append("none stored in the checkpoint")
    limits = (
        "A person head: `segment()` also returns a whole-person matte (the portrait's subject); the "
        "parse covers the face and hair only."
        if model.get("person_head") else
        "Helen labels cover the face and hair only: neck, ears, body and clothes are background, "
        "so the subject mask of a portrait stops at the chin and hair line."
    )
    lines += ["", "## Limits", "", limits, ""]
    return "\n".join(lines)


def _read_metrics(path: Path) -> dict[str, float]:
    """The ``scores`` of an eval.py ``metrics.json``; ValueError naming the file otherwise."""
    try:
        scores = json.loads(path.read_text(encoding="utf-8"))["scores"]
    except FileNotFoundError:
        raise ValueError(f"--metrics {path}: no such file") from None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"--metrics {path}: not a metrics.json of eval.py (a JSON object with "
                         f"'scores'): {type(err).__name__}: {err}") from None
    if not isinstance(scores, Mapping) or not all(
        v is None or isinstance(v, (int, float)) for v in scores.values()
    ):
        raise ValueError(f"--metrics {path}: 'scores' must map metric names to numbers")
    return dict(scores)


def main(argv: list[str] | None = None) -> int:
    """``python -m portraitseg.models.checkpoint --ckpt X.ckpt --out model.pt [--card MODEL_CARD.md]``."""
    parser = argparse.ArgumentParser(
        prog="python -m portraitseg.models.checkpoint",
        description="Export a training checkpoint as a small weights-only file (fp16 state dict + "
                    "model config + class names + val metrics), loadable with load_segmenter.",
    )
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint from python train.py")
    parser.add_argument("--out", required=True, type=Path, help="output weights file (.pt)")
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--metrics", type=Path,
                        help="metrics.json from eval.py to store instead of the checkpoint's")
    parser.add_argument("--card", type=Path, help="also write a model card draft (markdown)")
    args = parser.parse_args(argv)
    metrics = None
    try:
        check_output_not_input(args.out, "--out", {"--ckpt": args.ckpt, "--metrics": args.metrics})
        if args.card:
            check_output_not_input(args.card, "--card", {"--ckpt": args.ckpt, "--metrics": args.metrics,
                                                         "--out": args.out})
            check_destination(args.card)
        if args.metrics:
            metrics = _read_metrics(args.metrics)
        out = export_weights(args.ckpt, args.out, getattr(torch, args.dtype), metrics)
        _, info = load_segmenter(out)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
        if args.card:
            atomic_write(args.card, model_card(info, out).encode("utf-8"))
            print(f"wrote {args.card}")
    except (FileNotFoundError, InputError, KeyError, ValueError) as err:  # CheckpointError: InputError
        print(f"error: {err}", file=sys.stderr)
        return 2
    except WriteError as err:  # names the file; nothing was left under it
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err.filename or args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
