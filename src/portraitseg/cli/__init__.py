"""Command-line entry points (Hydra mains for train/eval, argparse for render/export)."""

from portraitseg.config import config_dir

__all__ = ["config_dir"]
