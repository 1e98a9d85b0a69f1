"""portraitseg: Helen face parsing with Lightning + Hydra, and DSLR-style portraits on tensors."""

from portraitseg._version import __version__

__all__ = ["PortraitPipeline", "PortraitResult", "__version__"]


def __getattr__(name: str):
    """``portraitseg.PortraitPipeline`` / ``PortraitResult``, imported on first use (so that
    ``import portraitseg`` stays light: no PyTorch)."""
    if name in ("PortraitPipeline", "PortraitResult"):
        from portraitseg import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'portraitseg' has no attribute {name!r}")
