"""Shared limits and defaults: one value each, imported wherever it applies (no PyTorch here, so
the CLI's argument parsing stays light)."""

from __future__ import annotations

from pathlib import Path

#: The one pixel limit (width x height) of a photo or label: what dataset readers decode, what
#: ``portraitseg render`` reads (``--max-pixels``) and what :class:`~portraitseg.PortraitPipeline`
#: accepts (``max_pixels``). 50 MP covers 48 MP phone and 45 MP DSLR photos while keeping the
#: render's memory (about 200 bytes per pixel on the CPU) bounded, and refuses decompression bombs.
DEFAULT_MAX_PIXELS = 50_000_000
#: Tolerance of the [0, 1] range checks of images and alphas (float rounding of resize / colour
#: conversions).
RANGE_TOLERANCE = 1e-3
#: Model input size (long side) when a checkpoint does not record its training size: the pipeline's
#: pass 1 and ``portraitseg render`` alike.
DEFAULT_MODEL_SIZE = 256



def config_dir() -> str:
    """The Hydra config tree: the packaged copy in a wheel install, else the checkout's conf/."""
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return str(packaged)
    return str(Path(__file__).resolve().parents[2] / "conf")


__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MODEL_SIZE", "config_dir"]
