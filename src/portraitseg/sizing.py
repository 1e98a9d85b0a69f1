"""Long-side sizing: the one rule for the size of a photo scaled to a given long side.

Used for the model input (letterbox, pass 1), the parse grid, the person extension's working
grid, the onnxruntime runner and the stages figure's panels. Plain Python: no PyTorch, no numpy.
"""

from __future__ import annotations


def long_side(height: int, width: int, size: int, *, upscale: bool = True) -> tuple[int, int]:
    """``(h, w)`` of an ``height x width`` image scaled so its long side is ``size`` (aspect
    kept, rounded, at least 1); with ``upscale=False`` an image already smaller keeps its size.

    Raises:
        ValueError: a size or side below 1.
    """
    if min(height, width, size) < 1:
        raise ValueError(f"sizes must be >= 1, got {height}x{width} -> long side {size}")
    scale = size / max(height, width)
    if not upscale:
        scale = min(1.0, scale)
    return max(1, round(height * scale)), max(1, round(width * scale))


__all__ = ["long_side"]
