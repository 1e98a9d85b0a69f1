"""Reading trained segmenters safely: a Lightning checkpoint or a weights-only export.

Both are read with ``torch.load(weights_only=True)`` only: tensors and plain containers, never
arbitrary pickled objects. The network is rebuilt from the stored model config by
:func:`portraitseg.models.create_model` (the only constructor a file may name) with
``encoder_weights=None``, so loading never downloads anything.
"""

from __future__ import annotations

import os
import pickle
import typing
import zipfile
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from portraitseg.classes import CLASS_NAMES, NUM_CLASSES
from portraitseg.io import InputError
from portraitseg.models.registry import create_model
from portraitseg.models.segmenter import Segmenter

FORMAT = "portraitseg.weights"
FORMAT_VERSION = 1
#: the only constructor a stored model config may name
MODEL_TARGETS = ("portraitseg.models.create_model", "portraitseg.models.registry.create_model")
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
