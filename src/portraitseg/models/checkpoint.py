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
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import typing
import zipfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from portraitseg._version import __version__
from portraitseg.classes import CLASS_NAMES, NUM_CLASSES
from portraitseg.io import (
    InputError,
    WriteError,
    atomic_write,
    check_destination,
    check_output_not_input,
    sha256_file,
    write_torch,
)
from portraitseg.models.registry import create_model
from portraitseg.models.segmenter import Segmenter

FORMAT = "portraitseg.weights"
FORMAT_VERSION = 1
#: the only constructor a stored model config may name
MODEL_TARGETS = ("portraitseg.models.create_model", "portraitseg.models.registry.create_model")
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "weights" / "default.pt"
EXPECTED = (
    "expected a checkpoint written by `python train.py` (outputs/<task>/runs/<time>/checkpoints/"
    "*.ckpt) or a weights file exported from one with `python -m portraitseg.models.checkpoint "
    "--ckpt <file.ckpt> --out <model.pt>`"
)


class CheckpointError(InputError):
    """A file is not a portraitseg checkpoint or weights export (the message says what it is)."""


@dataclass
class StoredModel:
    """What a checkpoint or export holds, before the network is built.

    Attributes:
        config: the model config (``create_model`` keyword arguments with ``_target_``), with
            ``encoder_weights`` set to ``None``.
        state_dict: the segmenter's state dict (fp32 floating tensors).
        info: ``path``, ``kind`` (``lightning`` | ``export``), ``model`` (the config as trained),
            ``class_names``, ``image_size`` (training input size, if known), ``metrics``
            (validation scores, possibly empty), ``epoch``, ``global_step``, ``source``.
    """

    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)


# Checkpoints written before SegmentationModule.on_save_checkpoint made every value plain hold a
# Hydra-instantiated datamodule's hyperparameters as OmegaConf containers. These classes are pure
# data (their unpickling only fills attributes), so such files still load with weights_only=True.
_OMEGACONF_GLOBALS = {
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.nodes.AnyNode",
    "omegaconf.base.ContainerMetadata", "omegaconf.base.Metadata", "typing.Any", "builtins.dict",
    "builtins.list", "builtins.int", "collections.defaultdict",
}


def _omegaconf_classes(names: set[str]) -> list[Any]:
    import omegaconf.base
    import omegaconf.nodes

    table = {
        "omegaconf.dictconfig.DictConfig": omegaconf.DictConfig,
        "omegaconf.listconfig.ListConfig": omegaconf.ListConfig,
        "omegaconf.nodes.AnyNode": omegaconf.nodes.AnyNode,
        "omegaconf.base.ContainerMetadata": omegaconf.base.ContainerMetadata,
        "omegaconf.base.Metadata": omegaconf.base.Metadata,
        "typing.Any": typing.Any,
        "builtins.dict": dict,
        "builtins.list": list,
        "builtins.int": int,
        "collections.defaultdict": defaultdict,
    }
    return [table[n] for n in names]


def _refuse(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: cannot load this model file: {what}; {EXPECTED}.")


def _torch_load(path: Path, map_location: Any) -> Any:
    """``torch.load(weights_only=True)`` with errors that say what the file is."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file; {EXPECTED}")
    if not zipfile.is_zipfile(path):
        raise _refuse(path, "it is not a PyTorch file (torch.save writes a zip archive)")
    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as err:  # noqa: BLE001 - a zip that torch cannot read
        raise _refuse(path, f"it is a zip archive that torch cannot read ({err})") from err
    foreign = sorted(unsafe - _OMEGACONF_GLOBALS)
    if foreign:
        raise _refuse(
            path,
            "it contains pickled Python objects (" + ", ".join(foreign[:5])
            + (", ..." if len(foreign) > 5 else "")
            + ") that are refused because unpickling them could run arbitrary code (only "
            "tensors and plain containers are loaded: torch.load(weights_only=True))",
        )
    try:
        with torch.serialization.safe_globals(_omegaconf_classes(unsafe)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise _refuse(path, f"torch.load(weights_only=True) failed ({type(err).__name__}: {first})") from err


def _class_names(classes: int) -> list[str]:
    return list(CLASS_NAMES) if classes == NUM_CLASSES else [f"class{i}" for i in range(classes)]


def _model_config(path: Path, config: Any) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise _refuse(path, f"its model config is a {type(config).__name__}, not a mapping")
    config = dict(config)
    target = config.get("_target_")
    if target not in MODEL_TARGETS:
        raise _refuse(
            path, f"its model config names the constructor {target!r}; only {MODEL_TARGETS[0]} is allowed"
        )
    config["_target_"] = MODEL_TARGETS[0]
    return config


def _plain_floats(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return float(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain_floats(v) for k, v in obj.items()}
    return obj


def _from_lightning(path: Path, ckpt: Mapping[str, Any]) -> StoredModel:
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, Mapping) or "net" not in hparams:
        raise _refuse(
            path,
            "it is a Lightning checkpoint but not of portraitseg's SegmentationModule "
            f"(hyper_parameters hold {sorted(hparams) if isinstance(hparams, Mapping) else None}, "
            "no 'net' model config)",
        )
    config = _model_config(path, hparams["net"])
    state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    extra = ckpt.get("portraitseg") if isinstance(ckpt.get("portraitseg"), Mapping) else {}
    metrics = dict(_plain_floats(extra.get("val_metrics") or {}))
    if not metrics:  # older checkpoints: only the monitored score, from ModelCheckpoint's state
        for key, state_ in (ckpt.get("callbacks") or {}).items():
            if "ModelCheckpoint" in str(key) and isinstance(state_, Mapping):  # + subclasses
                score = state_.get("current_score")
                if state_.get("monitor") and score is not None:
                    metrics[str(state_["monitor"]).removeprefix("val/")] = float(score)
    classes = int(config.get("classes", NUM_CLASSES))
    data = ckpt.get("datamodule_hyper_parameters")
    info = {
        "kind": "lightning",
        "image_size": data.get("image_size") if isinstance(data, Mapping) else None,
        "class_names": _class_names(classes),
        "metrics": metrics,
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "source": {"file": path.name, "lightning_version": ckpt.get("pytorch-lightning_version")},
    }
    return StoredModel(config, state, info)


def _from_export(path: Path, obj: Mapping[str, Any]) -> StoredModel:
    version = obj.get("version")
    if version != FORMAT_VERSION:
        raise _refuse(path, f"it is a {FORMAT} file of version {version}; this portraitseg reads "
                            f"version {FORMAT_VERSION} (upgrade portraitseg, or re-export)")
    config = _model_config(path, obj.get("model"))
    state = obj.get("state_dict")
    if not isinstance(state, Mapping):
        raise _refuse(path, "its state_dict is missing")
    classes = int(config.get("classes", NUM_CLASSES))
    names = list(obj.get("class_names") or _class_names(classes))
    if len(names) != classes:
        raise _refuse(path, f"it names {len(names)} classes but its model has {classes}")
    info = {
        "kind": "export",
        "image_size": obj.get("image_size"),
        "class_names": names,
        "metrics": dict(obj.get("metrics") or {}),
        "epoch": (obj.get("source") or {}).get("epoch"),
        "global_step": (obj.get("source") or {}).get("global_step"),
        "source": dict(obj.get("source") or {}),
    }
    return StoredModel(config, dict(state), info)


def read_model_file(path: str | os.PathLike, map_location: Any = "cpu") -> StoredModel:
    """Read a checkpoint or export (``torch.load(weights_only=True)``) without building the net.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is not ours; the message says what it is and what is expected.
    """
    path = Path(path)
    obj = _torch_load(path, map_location)
    if not isinstance(obj, Mapping):
        raise _refuse(path, f"it holds a {type(obj).__name__}, not a checkpoint dictionary")
    if obj.get("format") == FORMAT:
        stored = _from_export(path, obj)
    elif "state_dict" in obj and "pytorch-lightning_version" in obj:
        stored = _from_lightning(path, obj)
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise _refuse(path, "it is a bare state dict (tensors only) without the model config "
                            "needed to rebuild the network")
    else:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise _refuse(path, f"it is a dictionary with keys [{keys}] that is neither a Lightning "
                            f"checkpoint nor a {FORMAT} export")
    stored.state_dict = {
        k: v.float() if v.is_floating_point() else v for k, v in stored.state_dict.items()
    }
    stored.info["model"] = dict(stored.config)
    stored.info["path"] = str(path)
    stored.config["encoder_weights"] = None
    return stored


def build_segmenter(stored: StoredModel) -> Segmenter:
    """Build the network of ``stored`` (no download) and load its weights (strict)."""
    kwargs = {k: v for k, v in stored.config.items() if k != "_target_"}
    path = stored.info.get("path", "<model file>")
    try:
        model = create_model(**kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its model config {kwargs} does not build: {err}") from err
    load_weights(model, stored.state_dict, path)
    return model.eval()


def load_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str) -> None:
    """``model.load_state_dict(state_dict)`` (strict) with an error naming the file."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: its weights do not fit the model its config describes (missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]}); the file "
            "is damaged or was edited"
        )
    model.load_state_dict(state_dict)


def load_segmenter(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[Segmenter, dict]:
    """Load a trained :class:`Segmenter` (in eval mode) from a checkpoint or a weights export.

    Args:
        path: a Lightning ``.ckpt`` written by ``python train.py`` or a file written by
            :func:`export_weights`.
        map_location: as for :func:`torch.load`.

    Returns:
        ``(segmenter, info)``; ``info`` has ``path``, ``kind``, ``model`` (config),
        ``class_names``, ``image_size``, ``metrics``, ``epoch``, ``global_step`` and ``source``.
    """
    stored = read_model_file(path, map_location)
    return build_segmenter(stored), stored.info


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
