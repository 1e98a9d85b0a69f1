"""Run-wide utilities of the Hydra entry points, in lightning-hydra-template's manner (``extras``).

``conf/extras/default.yaml`` sets, for ``python train.py``:

- ``ignore_warnings``: silence every Python warning (the known noise below is silenced always);
- ``enforce_tags``: refuse to start without ``tags`` (for runs that must be findable later);
- ``print_config``: print the composed config as YAML before training.

Known noise, silenced on every run: Lightning's "Tip: try installing litlogger/litmodels" lines,
its warning that a tiny epoch is shorter than ``log_every_n_steps``, and the torch/Lightning
``_pytree`` DeprecationWarnings (``_register_pytree_node``, ``isinstance(treespec, LeafSpec)``).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

#: warning messages silenced on every run (regexes matched at the start of the message)
NOISY_WARNINGS = (
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"`torch.utils._pytree._register_pytree_node` is deprecated",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
#: info lines of Lightning's rank-zero logger dropped on every run
NOISY_LOG_PREFIXES = ("💡 Tip:",)


class ExtrasError(ValueError):
    """The ``extras`` settings refuse this run (e.g. no tags with ``enforce_tags``)."""


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISY_LOG_PREFIXES)


def quiet_known_noise() -> None:
    """Silence the messages listed in :data:`NOISY_WARNINGS` and :data:`NOISY_LOG_PREFIXES`."""
    for message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())


def log_each_line_once() -> None:
    """Lightning's ``lightning`` logger prints through its own console handler (``INFO: ...``) and
    also passes each record to the root logger, which Hydra's job logging writes to the console and
    the run's log file: every line twice. Where the root logger has handlers, drop Lightning's own,
    so each line appears once (and still reaches the log file)."""
    import lightning  # noqa: F401 - its handler is attached on import

    if not logging.getLogger().handlers:
        return
    ours = logging.getLogger("lightning")
    for handler in list(ours.handlers):
        if type(handler) is logging.StreamHandler:
            ours.removeHandler(handler)


def apply_extras(cfg: Any) -> None:
    """Apply ``cfg.extras`` (absent: only the known noise is silenced).

    Raises:
        ExtrasError: ``extras.enforce_tags`` is set and ``tags`` is empty.
    """
    quiet_known_noise()
    extras = cfg.get("extras") or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if extras.get("enforce_tags") and not list(cfg.get("tags") or []):
        raise ExtrasError(
            "extras.enforce_tags=true but the run has no tags: pass e.g. tags='[baseline,helen]' "
            "(or extras.enforce_tags=false)"
        )
    if extras.get("print_config"):
        from omegaconf import OmegaConf
        from rich.console import Console
        from rich.syntax import Syntax

        Console().print(Syntax(OmegaConf.to_yaml(cfg, resolve=False), "yaml"))
