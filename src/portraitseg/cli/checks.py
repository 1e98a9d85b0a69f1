"""One validation step for the Hydra entry points (``train.py``, ``eval.py``), run on the composed
config before anything is instantiated: the types and ranges of the common keys.

A bad value ends in one line that names the key, the value and the fix (the mains print it as
``error: ...`` and exit with status 2) instead of a traceback from deep inside a DataLoader,
Lightning or an optimizer. Keys a config does not have are skipped (``eval.py`` has no
optimizer). Problems only known later (a dataset root, a list file, a checkpoint of another
model) are named where they are found: :mod:`portraitseg.data.layouts`,
:class:`~portraitseg.data.HelenDataModule`, :func:`portraitseg.cli.train.resume_checkpoint`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from portraitseg.data.layouts import LAYOUTS

#: ``trainer.precision`` values Lightning accepts (its ``_PRECISION_INPUT``, without importing it)
PRECISIONS = ("64-true", "32-true", "16-true", "16-mixed", "bf16-true", "bf16-mixed", "64", "32", "16",
              "bf16", "transformer-engine", "transformer-engine-float16")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
_MAX_TIME = re.compile(r"^\d+:\d{1,2}:\d{1,2}:\d{1,2}$")


class ConfigError(ValueError):
    """A config value cannot run; the message names the key, the value and the fix (exit status 2)."""


# ---- value rules: each returns None (fine) or what the value must be


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


Rule = Callable[[Any], "str | None"]


def integer(lo: int, *extra: int, null: bool = False) -> Rule:
    """An integer ``>= lo`` (or one of ``extra``, or null)."""
    def rule(v: Any) -> str | None:
        if (v is None and null) or (_is_int(v) and v in extra):
            return None
        if _is_int(v) and v >= lo:
            return None
        what = f"an integer >= {lo}"
        what += "".join(f" or {e}" for e in extra) + (" or null" if null else "")
        return what
    return rule


def number(lo: float, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False,
           null: bool = False) -> Rule:
    """A finite number in the interval ``lo..hi`` (open ends as told), or null."""
    def rule(v: Any) -> str | None:
        if v is None and null:
            return None
        ok = _is_number(v) and math.isfinite(v)
        ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if ok:
            return None
        left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
        span = f"> {lo:g}" if hi == math.inf and lo_open else (
            f">= {lo:g}" if hi == math.inf else f"in {left}{lo:g}, {hi:g}{right}")
        return f"a finite number {span}" + (" or null" if null else "")
    return rule


def choice(*options: Any) -> Rule:
    def rule(v: Any) -> str | None:
        return None if v in options and not isinstance(v, bool) else "one of " + ", ".join(map(str, options))
    return rule


def either(*rules: Rule) -> Rule:
    """The value passes one of ``rules``."""
    def rule(v: Any) -> str | None:
        wants = [r(v) for r in rules]
        return None if None in wants else " or ".join(wants)
    return rule


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def batches(v: Any) -> str | None:
    """Lightning's ``limit_*_batches`` / ``overfit_batches``: a count, a fraction or null."""
    return either(integer(0, null=True), number(0, 1))(v)


def max_time(v: Any) -> str | None:
    ok = v is None or isinstance(v, (dict, DictConfig)) or (isinstance(v, str) and _MAX_TIME.match(v))
    return None if ok else 'null or a duration "DD:HH:MM:SS" (e.g. "00:02:00:00")'


def betas(v: Any) -> str | None:
    ok = isinstance(v, (list, tuple, ListConfig)) and len(v) == 2
    ok = ok and all(_is_number(b) and 0 <= b < 1 for b in v)
    return None if ok else "two numbers in [0, 1), e.g. [0.9,0.999]"


#: key -> (rule, an example of a good value for the message)
COMMON_KEYS: dict[str, tuple[Rule, str]] = {
    "seed": (integer(0, null=True), "42"),
    "deterministic": (boolean, "false"),
    "train": (boolean, "true"),
    "test": (boolean, "false"),
    "data.batch_size": (integer(1), "8"),
    "data.eval_batch_size": (integer(1, null=True), "null"),
    "data.num_workers": (integer(0), "2"),
    "data.image_size": (integer(32), "256"),
    "data.val_fraction": (number(0, 1, lo_open=True, hi_open=True), "0.1"),
    "data.split_seed": (integer(0), "0"),
    "data.limit": (integer(1, null=True), "null"),
    "data.limit_val": (integer(1, null=True), "null"),
    "data.max_pixels": (integer(1, null=True), "50000000"),
    "data.epoch_size": (integer(1, null=True), "2800"),
    "data.layout": (choice("auto", *LAYOUTS), "auto"),
    "data.skip_bad": (boolean, "false"),
    "model.classes": (integer(2), "11"),
    "optimizer.lr": (number(0, lo_open=True), "1e-3"),
    "optimizer.weight_decay": (number(0), "1e-4"),
    "optimizer.betas": (betas, "[0.9,0.999]"),
    "scheduler.warmup_steps": (integer(0), "50"),
    "scheduler.power": (number(0, lo_open=True), "0.9"),
    "scheduler.min_lr_ratio": (number(0, 1), "0.0"),
    "loss.label_smoothing": (number(0, 1, hi_open=True), "0.0"),
    "loss.ohem": (number(0, 1, lo_open=True, null=True), "0.25"),
    "loss.person_weight": (number(0), "1.0"),
    "loss.person_iou_weight": (number(0), "1.0"),
    "loss.render_weight": (number(0), "0.0"),
    "module.num_log_images": (integer(0), "4"),
    "module.tta_flip": (boolean, "false"),
    "trainer.accelerator": (choice(*ACCELERATORS), "cpu"),
    "trainer.devices": (either(integer(1, -1), choice("auto"), lambda v: None if isinstance(
        v, (str, ListConfig)) else "a device list"), "1"),
    "trainer.num_nodes": (integer(1), "1"),
    "trainer.precision": (choice(*PRECISIONS, 64, 32, 16), "32-true"),
    "trainer.max_epochs": (integer(1, -1), "10"),
    "trainer.min_epochs": (integer(0, null=True), "1"),
    "trainer.max_steps": (integer(1, -1), "-1"),
    "trainer.max_time": (max_time, '"00:02:00:00"'),
    "trainer.gradient_clip_val": (number(0, null=True), "1.0"),
    "trainer.accumulate_grad_batches": (integer(1), "1"),
    "trainer.limit_train_batches": (batches, "null"),
    "trainer.limit_val_batches": (batches, "null"),
    "trainer.limit_test_batches": (batches, "null"),
    "trainer.limit_predict_batches": (batches, "null"),
    "trainer.overfit_batches": (batches, "0.0"),
    "trainer.val_check_interval": (either(integer(1, null=True), number(0, 1, lo_open=True)), "null"),
    "trainer.check_val_every_n_epoch": (integer(1, null=True), "1"),
    "trainer.num_sanity_val_steps": (integer(0, -1, null=True), "null"),
    "trainer.log_every_n_steps": (integer(1), "10"),
    "trainer.fast_dev_run": (either(boolean, integer(0)), "false"),
    # eval.py
    "split": (choice("test", "val", "train"), "test"),
    "tta_flip": (boolean, "false"),
    "num_figures": (integer(0), "8"),
}
#: per source of ``data=mixed`` (``data.sources.<name>.<key>``)
SOURCE_KEYS: dict[str, tuple[Rule, str]] = {
    "weight": (number(0), "1.0"),  # 0: validated only, never drawn for training
    "val_fraction": (number(0, 1, hi_open=True), "0.1"),
    "limit": (integer(1, null=True), "null"),
    "layout": (choice("auto", *LAYOUTS), "auto"),
}

_ABSENT = object()


def _values(cfg: DictConfig) -> Iterator[tuple[str, Any, Rule, str]]:
    for key, (rule, example) in COMMON_KEYS.items():
        yield key, _select(cfg, key), rule, example
    sources = OmegaConf.select(cfg, "data.sources", default=None)
    if isinstance(sources, DictConfig):
        for name in sources:
            for key, (rule, example) in SOURCE_KEYS.items():
                full = f"data.sources.{name}.{key}"
                yield full, _select(cfg, full), rule, example


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    except Exception as err:  # noqa: BLE001 - an interpolation that cannot resolve, a ??? value
        raise ConfigError(f"{key}: {err}".splitlines()[0]) from None


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) and not value else str(value).replace(" ", "")


def check_config(cfg: DictConfig) -> None:
    """Check the types and ranges of the common keys of a composed ``train``/``eval`` config.

    Raises:
        ConfigError: the first bad value, as ``<key>=<value>: must be <what> (e.g. <key>=<good>)``.
    """
    for key, value, rule, example in _values(cfg):
        if value is _ABSENT:
            continue
        wanted = rule(value)
        if wanted is not None:
            raise ConfigError(f"{key}={_show(value)}: must be {wanted}; pass e.g. {key}={example}")
    weights = OmegaConf.select(cfg, "loss.class_weights", default=None)
    classes = OmegaConf.select(cfg, "model.classes", default=None)
    if weights is not None:
        ok = isinstance(weights, ListConfig) and all(_is_number(w) and w >= 0 for w in weights)
        if not ok or (classes is not None and len(weights) != classes):
            raise ConfigError(f"loss.class_weights={_show(weights)}: must be null or {classes or 'K'} "
                              "numbers >= 0, one per class of model.classes; pass e.g. "
                              "loss.class_weights=null")


def instantiate_checked(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """Build the Lightning object of the config node ``key`` (``trainer``, ``callbacks.<name>``);
    values its constructor refuses (a MisconfigurationException or ValueError) are a
    :class:`ConfigError` naming ``key``, not a Hydra traceback."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, (MisconfigurationException, ValueError)):
            raise ConfigError(f"{key}: {err.__cause__}; change the {key}.* overrides") from None
        raise
