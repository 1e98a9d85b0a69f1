"""Command-line entry points (Hydra mains for train/eval, argparse for render/export)."""

from pathlib import Path


def config_dir() -> str:
    """The Hydra config tree: the packaged copy in a wheel install, else the checkout's conf/."""
    packaged = Path(__file__).resolve().parents[1] / "conf"
    if packaged.is_dir():
        return str(packaged)
    return str(Path(__file__).resolve().parents[3] / "conf")
