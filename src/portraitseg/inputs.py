"""The photos a :class:`~portraitseg.pipeline.PortraitPipeline` takes: tensors, numpy arrays or lists
of them normalised into one float32 ``(B, 3, H, W)`` batch in [0, 1], every bad input named."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from portraitseg.config import DEFAULT_MAX_PIXELS, RANGE_TOLERANCE


class PipelineError(ValueError):
    """A pipeline cannot be built or run as asked (the message names the option and the fix)."""


def _as_batch(item: Any, where: str) -> torch.Tensor:
    """One input as a ``(b, C, H, W)`` tensor view (a numpy ``(H, W[, C])`` / ``(B, H, W, C)``
    photo array is wrapped and permuted, nothing copied)."""
    if isinstance(item, np.ndarray):
        array = item[..., None] if item.ndim == 2 else item
        if array.ndim not in (3, 4) or array.shape[-1] > 4:
            raise PipelineError(
                f"{where}: a numpy array is read as a photo (H, W, 3) or a batch (B, H, W, 3) (the "
                f"layout of PIL/imageio/OpenCV arrays), got shape {item.shape}; for a (3, H, W) "
                "array pass torch.from_numpy(array)")
        if any(step < 0 for step in array.strides):  # e.g. a BGR -> RGB flip, array[..., ::-1]
            array = array.copy()
        try:
            with warnings.catch_warnings():  # read-only arrays (np.asarray of a PIL image) are only read
                warnings.simplefilter("ignore", UserWarning)
                tensor = torch.from_numpy(array)
        except TypeError:
            raise PipelineError(f"{where}: numpy dtype {item.dtype} is not an image type; pass uint8 "
                                "(0-255) or float (0-1) pixels") from None
        tensor = tensor.movedim(-1, -3)
        return tensor if tensor.ndim == 4 else tensor[None]
    if not isinstance(item, torch.Tensor):
        hint = ""
        if hasattr(item, "__array_interface__"):
            hint = " (a PIL image: np.asarray(image.convert('RGB')))"
        elif isinstance(item, (str, os.PathLike)):
            hint = " (a file: read it first, portraitseg.io.read_image(path) gives an (H, W, 3) array)"
        raise PipelineError(f"{where}: expected a torch.Tensor or a numpy array, got "
                            f"{type(item).__name__}{hint}")
    if item.ndim not in (3, 4):
        raise PipelineError(f"{where}: expected (B, 3, H, W) or (3, H, W), got shape {tuple(item.shape)}")
    return item if item.ndim == 4 else item[None]


#: integer pixel types and their full scale (the values that map to 1.0)
_INT_SCALE = {torch.uint8: 255.0, torch.uint16: 65535.0}


def _check_pixels(batch: torch.Tensor, first: int) -> None:
    """Raise if a float ``(b, 3, H, W)`` batch (images ``first``.. of the call) has NaN/inf or values
    outside [0, 1], naming the image; CPU only (reading values back would synchronise a GPU)."""
    if batch.device.type != "cpu" or batch.numel() == 0 or torch.compiler.is_compiling():
        return
    low, high = batch.flatten(1).aminmax(dim=1)  # NaN propagates into both
    for i, (lo, hi) in enumerate(zip(low.tolist(), high.tolist(), strict=True)):
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise PipelineError(
                f"image #{first + i} has NaN or infinite pixels (min {lo}, max {hi}); repair or drop "
                "it, e.g. torch.nan_to_num(image, nan=0.0).clamp(0, 1)")
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise PipelineError(
                f"image #{first + i} has values in [{lo:.4g}, {hi:.4g}]; float images must be in "
                "[0, 1]: divide 0-255 values by 255 (or pass the uint8 photo as it is)")


def stack_images(
    images: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    device: torch.device | str | None = None,
    keep_uint8: bool = False,
) -> torch.Tensor:
    """Photos as one float32 ``(B, 3, H, W)`` batch in [0, 1]: the pipeline's input normaliser.

    Args:
        images: a tensor ``(B, C, H, W)`` / ``(C, H, W)``; a numpy photo array ``(H, W, C)`` /
            ``(B, H, W, C)`` / ``(H, W)`` (HWC, as PIL, imageio and OpenCV hold photos; channels
            taken as RGB); or a sequence of these, all of one size (concatenated in order). ``C``
            is 3 (RGB) or 1 (gray, repeated). uint8 (/255), uint16 (/65535) or float in [0, 1].
        max_pixels: refuse photos of more than this many pixels (``H * W``), checked before any
            copy; ``None``: no limit.
        device: where numpy arrays go (default: the CPU); tensors stay where they are.
        keep_uint8: uint8 photos stay uint8 (0-255): a view of a single RGB photo (a numpy
            ``(H, W, 3)`` array becomes a channels-last tensor), else one new uint8 batch; for
            consumers that read a photo in parts (:func:`portraitseg.sizing.area_resize`).

    Returns:
        ``(B, 3, H, W)`` float32: ``images`` itself for a float32 RGB tensor, else a new tensor
        (uint8 with ``keep_uint8`` when every photo is uint8).

    Raises:
        PipelineError: naming the image and the fix: no images, mixed sizes or devices, a shape,
            channel count or dtype that is not a photo, NaN/inf or values outside [0, 1] (float
            input on the CPU), a photo over ``max_pixels``.
    """
    single = isinstance(images, (torch.Tensor, np.ndarray, str)) or not isinstance(images, Sequence)
    sources = [images] if single else list(images)
    items = [_as_batch(src, "images" if single else f"images[{i}]") for i, src in enumerate(sources)]
    batch_size = sum(t.shape[0] for t in items)
    if not items or batch_size == 0:
        raise PipelineError("no images given (an empty batch): pass a (B, 3, H, W) tensor with B >= 1, "
                            "a numpy (H, W, 3) photo or a list of them")
    sizes = [tuple(t.shape[-2:]) for t in items]
    if len(set(sizes)) > 1:
        listed = ", ".join(f"#{i} {h}x{w}" for i, (h, w) in enumerate(sizes))
        raise PipelineError(
            f"images of mixed sizes in one batch ({listed}); a batch holds one size: call the "
            "pipeline once per size (group photos by size) or resize them first"
        )
    height, width = sizes[0]
    if height == 0 or width == 0:
        raise PipelineError(f"images are {width}x{height} pixels: a photo needs at least 1x1")
    if max_pixels is not None and height * width > max_pixels:
        raise PipelineError(
            f"images are {width}x{height} = {height * width:,} pixels, over the limit of "
            f"max_pixels={max_pixels:,}; downscale them, or raise the limit with "
            "PortraitPipeline(..., max_pixels=N) / from_pretrained(..., max_pixels=N) (None: no limit)"
        )
    for i, t in enumerate(items):
        where = f"images[{i}]" if len(items) > 1 else "images"
        channels = t.shape[1]
        if channels == 4:
            raise PipelineError(
                f"{where} has 4 channels (RGBA); the pipeline takes RGB: composite the alpha over a "
                "background or drop it (images[:, :3] for a tensor, array[..., :3] for numpy)")
        if channels not in (1, 3):
            hwc = (" (channels last? a tensor is (B, 3, H, W): images.permute(0, 3, 1, 2))"
                   if t.shape[-1] in (1, 3, 4) else "")
            raise PipelineError(f"{where} has {channels} channels, shape {tuple(t.shape)}: images must be "
                                f"(B, 3, H, W) RGB (or 1-channel gray){hwc}")
        if t.dtype not in _INT_SCALE and not t.is_floating_point():
            raise PipelineError(f"{where}: dtype {t.dtype} is not a pixel type; pass uint8 (0-255), "
                                "uint16 (0-65535) or float in [0, 1], e.g. images.to(torch.uint8)")
    devices = {t.device for t, src in zip(items, sources, strict=True) if isinstance(src, torch.Tensor)}
    if len(devices) > 1:
        raise PipelineError(f"images on several devices ({', '.join(sorted(map(str, devices)))}): move "
                            "them to one, e.g. [t.to('cpu') for t in images]")
    target = devices.pop() if devices else torch.device(device or "cpu")
    if isinstance(images, torch.Tensor) and images.dtype == torch.float32 and images.shape[-3] == 3:
        _check_pixels(items[0], 0)
        return items[0]
    uint8 = keep_uint8 and all(t.dtype == torch.uint8 for t in items)
    if uint8 and len(items) == 1 and items[0].shape[1] == 3:
        return items[0].to(target)
    batch = torch.empty((batch_size, 3, height, width), dtype=torch.uint8 if uint8 else torch.float32,
                        device=target)
    first = 0
    for t in items:  # one allocation: each input converted straight into its slice
        part = batch[first:first + t.shape[0]]
        part.copy_(t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t)
        if t.dtype in _INT_SCALE:
            if not uint8:
                part.div_(_INT_SCALE[t.dtype])
        else:
            _check_pixels(part, first)
        first += t.shape[0]
    return batch


__all__ = ["PipelineError", "stack_images"]
