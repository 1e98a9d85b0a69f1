"""Render presets by name: the one place a caller's preset name becomes a file and a renderer.

A preset name (``disc``, ``gaussian``, ``halo_free``) is resolved only among the package's own
presets (``conf/render/<name>.yaml``): a plain name of letters, digits, ``_`` and ``-`` that is a
file in that folder. Never a path: ``../x``, ``/tmp/x.yaml`` or ``~/x`` are refused before any
file is opened. The preset's ``_target_`` must be the renderer class, so a preset file can build
a :class:`~portraitseg.render.PortraitRenderer` and nothing else.

This module imports neither PyTorch nor Hydra at import time (the CLI lists the presets for
``--help``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from portraitseg.config import config_dir

#: a preset name: letters, digits, ``_`` and ``-`` (no separators, dots or ``~``)
PRESET_NAME = re.compile(r"[A-Za-z0-9_-]+")
#: the only constructors a render preset may name
RENDERER_TARGETS = ("portraitseg.render.PortraitRenderer",)
#: Allowed ranges of the numeric render options, for the overrides a caller passes (the render
#: CLI's flags, the HTTP API's parameters) and for every value of a composed preset alike; the
#: renderer's own checks (e.g. ``highlight_threshold < 1``) still apply on top.
RENDER_LIMITS: dict[str, tuple[float, float]] = {
    "strength": (0.0, 1.0),  # fraction of the short side
    "sigma": (0.0, 10_000.0),  # pixels (null: use strength)
    "falloff": (0.0, 10.0),  # fraction of the short side
    "falloff_levels": (2, 32),
    "feather": (0.0, 1.0),
    "refine": (0.0, 1.0),
    "refine_eps": (1e-12, 1.0),
    "highlights": (0.0, 100.0),
    "highlight_threshold": (0.0, 1.0),
}


class PresetError(ValueError):
    """A preset name or preset content that cannot be used; the message names it and the fix."""


def presets_dir() -> Path:
    """The folder of the render presets (``conf/render/`` of the package or the checkout)."""
    return Path(config_dir()) / "render"


def preset_names() -> list[str]:
    """Names of the render presets, sorted (``disc``, ``gaussian``, ``halo_free``)."""
    folder = presets_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if p.is_file() and PRESET_NAME.fullmatch(p.stem))


def preset_path(name: str) -> Path:
    """The file of preset ``name``.

    Raises:
        PresetError: ``name`` is not a plain preset name (a path, empty, not a string) or no such
            preset exists; the message lists the presets.
    """
    known = preset_names()
    choices = f"choose one of {', '.join(known) or '(none installed)'}"
    if not isinstance(name, str) or not PRESET_NAME.fullmatch(name):
        raise PresetError(f"render preset {name!r} is not a preset name (letters, digits, _ and - "
                          f"only; a path is never loaded): {choices}, or pass a renderer object")
    path = presets_dir() / f"{name}.yaml"
    if name not in known or not path.is_file():
        raise PresetError(f"render preset {name!r}: no such preset in {presets_dir()}; {choices}")
    return path


def check_target(options: Mapping[str, Any], where: str) -> None:
    """Refuse render options whose ``_target_`` is not the renderer class, or that name a
    constructor anywhere inside (Hydra instantiates nested ``_target_`` entries too).

    Raises:
        PresetError: naming ``where`` and the target found.
    """
    target = options.get("_target_")
    if target not in RENDERER_TARGETS:
        raise PresetError(f"{where}: _target_ {target!r} is not allowed; a render preset builds "
                          f"{' or '.join(RENDERER_TARGETS)}")

    def nested(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            if "_target_" in value:
                raise PresetError(f"{where}: {key}._target_ {value['_target_']!r} is not allowed; the "
                                  "options of a render preset are values, not objects to build")
            for k, v in value.items():
                nested(v, f"{key}.{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                nested(v, f"{key}[{i}]")

    for key, value in options.items():
        nested(value, str(key))


def load_preset(name: str) -> dict[str, Any]:
    """The options of preset ``name`` as a plain dict (``_target_`` checked).

    Raises:
        PresetError: see :func:`preset_path` and :func:`check_target`.
    """
    import yaml  # plain YAML: a preset is a keyword dict (OmegaConf/Hydra stay off the render path)

    path = preset_path(name)
    try:
        options = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PresetError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(options, dict):
        raise PresetError(f"{path}: a render preset must be a mapping of options")
    check_target(options, str(path))
    return options


def build_renderer(options: Mapping[str, Any], where: str = "render options") -> Any:
    """Build a :class:`~portraitseg.render.PortraitRenderer` from options (``_target_`` checked
    first, so it is that class: built directly, without Hydra; the renderer's own ``ValueError``
    passes through)."""
    check_target(options, where)
    from portraitseg.render import PortraitRenderer

    return PortraitRenderer(**{k: v for k, v in options.items() if k != "_target_"})


def render_preset(name: str, **overrides: Any) -> Any:
    """Build the :class:`~portraitseg.render.PortraitRenderer` of the package preset ``name``
    (``disc``, ``gaussian``, ``halo_free``: :func:`portraitseg.presets.preset_names`); a name is
    never taken as a path (:func:`portraitseg.presets.preset_path`).

    Raises:
        PipelineError: not a preset name, or no such preset (listing the presets).
    """
    from portraitseg.inputs import PipelineError

    try:
        options = load_preset(name)
        options.update(overrides)
        return build_renderer(options, f"render preset {name!r}")
    except PresetError as err:
        raise PipelineError(str(err)) from None
