"""How a blur is applied: the plan (exact or downsampled, direct or FFT), reflect-101 padding,
the block-banded and FFT convolutions, the pooling and upsampling of the downsample path
(:mod:`portraitseg.render.blur` describes the methods and their error bounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from portraitseg.render.kernels import disc_kernel2d, gaussian_kernel1d, gaussian_ksize

Method = Literal["auto", "exact", "direct", "fft", "downsample"]
METHODS: tuple[str, ...] = ("auto", "exact", "direct", "fft", "downsample")

#: Blur (in low-resolution pixels) the downsample path keeps: the factor is the largest even
#: integer <= ``sigma / LOWRES_SIGMA``.
LOWRES_SIGMA = 4.0
#: Disc radius (in low-resolution pixels) the downsample path keeps, so the aperture stays round.
LOWRES_RADIUS = 8.0
#: Largest separable Gaussian kernel applied directly; longer ones go through the FFT (measured CPU
#: crossover at 1 MP: 49 taps 47 vs 49 ms, 65 taps 67 vs 51 ms).
DIRECT_MAX_KSIZE = 49
#: Largest disc kernel side applied directly; larger discs go through the FFT.
DIRECT_MAX_DISC = 9


# --------------------------------------------------------------------------------------------------
# Checks and small helpers
# --------------------------------------------------------------------------------------------------


def check_blur_input(image: torch.Tensor, name: str = "image") -> None:
    """Raise a clear error unless ``image`` is a floating ``(B, C, H, W)`` tensor with pixels."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(
            f"{name} must be a floating tensor, got {image.dtype}; convert uint8 images with "
            "image.float() / 255"
        )
    if image.shape[-1] == 0 or image.shape[-2] == 0:
        raise ValueError(f"{name} has no pixels: shape {tuple(image.shape)}")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown blur method {method!r}; choose one of {', '.join(METHODS)}")


def next_fast_len(n: int) -> int:
    """Smallest ``m >= n`` whose prime factors are all in (2, 3, 5, 7): a fast FFT length."""
    m = max(int(n), 1)
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _reflect_index(n: int, before: int, after: int, symmetric: bool, device: torch.device) -> torch.Tensor:
    """Source index for each padded position; any pad length (folds repeatedly, like OpenCV)."""
    idx = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    if symmetric:  # abcd -> dcba|abcd|dcba (edge pixel repeated)
        idx = idx.remainder(2 * n)
        return torch.where(idx >= n, 2 * n - 1 - idx, idx)
    period = 2 * (n - 1)  # reflect-101: abcd -> dcb|abcd|cba
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def pad_reflect(
    x: torch.Tensor, dim: int, before: int, after: int, *, symmetric: bool = False
) -> torch.Tensor:
    """Pad one spatial axis (``dim`` = -1 or -2) by reflection, for pads of any length.

    ``symmetric=False`` is OpenCV's ``BORDER_REFLECT_101``, ``True`` is ``BORDER_REFLECT``.
    """
    if before == 0 and after == 0:
        return x
    n = x.shape[dim]
    if not symmetric and before < n and after < n:  # torch's native "reflect" is reflect-101
        pad = (before, after, 0, 0) if dim in (-1, 3) else (0, 0, before, after)
        return F.pad(x, pad, mode="reflect")
    return x.index_select(dim, _reflect_index(n, before, after, symmetric, x.device))


# --------------------------------------------------------------------------------------------------
# Plans and paths
# --------------------------------------------------------------------------------------------------


class BlurPlan(NamedTuple):
    """How one blur is applied (see :func:`blur_plan`).

    ``factor`` is the pooling factor (1 = exact, full resolution); ``size`` is the sigma / radius
    applied at that resolution, by ``path`` (``"direct"`` or ``"fft"``); ``radius`` the kernel's
    half-width in those pixels.
    """

    kind: str
    size: float
    factor: int
    path: str
    radius: int


def downsample_factor(extent: float, lowres_extent: float, height: int, width: int) -> int:
    """Pooling factor that keeps at least ``lowres_extent`` low-res pixels of a blur of ``extent``
    pixels: the largest even integer ``<= extent / lowres_extent`` (and ``<= height, width``), or 1.

    Even only: with an odd factor one output phase of the bilinear upsampling sits exactly on a
    low-res sample and the others do not, which doubles the error on edges (measured).
    """
    factor = 2 * int(extent // (2 * lowres_extent))
    factor = min(factor, height - height % 2, width - width % 2)
    return factor if factor >= 2 else 1


def lowres_size(kind: str, size: float, factor: int) -> float:
    """Sigma / radius left to apply after pooling by ``factor``, so the total second moment is kept.

    Average pooling then bilinear upsampling by an even ``s`` add a variance of ``s**2 / 4``
    (averaged over the ``s`` output phases) in full-resolution pixels squared.
    """
    if factor == 1:
        return size
    if kind == "gaussian":
        return math.sqrt(max(size * size / (factor * factor) - 0.25, 1e-4))
    return math.sqrt(max(size * size / (factor * factor) - 1.0, 0.0))  # disc variance is r**2 / 4


def _kernel_radius(kind: str, size: float, ksize: int | None = None) -> int:
    if kind == "gaussian":
        return ((gaussian_ksize(size) if ksize is None else ksize) - 1) // 2
    return math.floor(size + 0.5)


def blur_plan(
    kind: str, size: float, height: int, width: int, method: str = "auto", ksize: int | None = None
) -> BlurPlan:
    """Decide how to apply a ``"gaussian"`` (``size`` = sigma) or ``"disc"`` (``size`` = radius) blur
    to an ``height x width`` image. Depends on Python numbers and shapes only (no device sync).
    """
    _check_method(method)
    if kind not in ("gaussian", "disc"):
        raise ValueError(f"unknown blur kernel {kind!r}; choose 'gaussian' or 'disc'")
    lowres = LOWRES_SIGMA if kind == "gaussian" else LOWRES_RADIUS
    factor = downsample_factor(size, lowres, height, width)
    if method in ("auto", "downsample") and factor >= 2:
        low = lowres_size(kind, size, factor)
        radius = _kernel_radius(kind, low)
        return BlurPlan(kind, low, factor, _exact_path(kind, radius), radius)
    radius = _kernel_radius(kind, size, ksize)
    path = method if method in ("direct", "fft") else _exact_path(kind, radius)
    return BlurPlan(kind, size, 1, path, radius)


def _exact_path(kind: str, radius: int) -> str:
    limit = DIRECT_MAX_KSIZE if kind == "gaussian" else DIRECT_MAX_DISC
    return "direct" if 2 * radius + 1 <= limit else "fft"


def _fft_conv_axis_valid(x: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
    k = taps.numel()
    n = x.shape[dim] - k + 1
    length = next_fast_len(x.shape[dim])
    kernel = torch.fft.rfft(taps, n=length)
    kernel = kernel.view(-1, 1) if dim == -2 else kernel
    y = torch.fft.irfft(torch.fft.rfft(x, n=length, dim=dim) * kernel, n=length, dim=dim)
    # Linear convolution: outputs k-1 .. k-2+n saw no wrap-around.
    return y.narrow(dim, k - 1, n)


def _banded(taps: torch.Tensor, block: int) -> torch.Tensor:
    """``(block + k - 1, block)`` matrix whose column ``j`` holds the taps at rows ``j .. j + k - 1``."""
    k = taps.numel()
    rows = torch.arange(block + k - 1, device=taps.device).view(-1, 1)
    offset = rows - torch.arange(block, device=taps.device).view(1, -1)
    inside = (offset >= 0) & (offset < k)
    return torch.where(inside, taps[offset.clamp(0, k - 1)], taps.new_zeros(()))


def _block(k: int) -> int:
    # Output columns per matrix product: each output costs block + k - 1 multiply-adds, at the
    # speed of a matrix product (~4x less CPU time than torch's depthwise convolution, measured).
    return max(32, k - 1)


def _banded_conv_rows(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Valid 1-D convolution along the last axis as one block-banded matrix product: the row is
    cut into overlapping windows of ``block + k - 1`` samples, each giving ``block`` outputs."""
    k = taps.numel()
    n = x.shape[-1] - k + 1
    block = min(_block(k), n)
    blocks = -(-n // block)
    if blocks * block > n:  # zeros feed only the outputs cropped below
        x = F.pad(x, (0, blocks * block - n))
    windows = x.unfold(-1, block + k - 1, block)  # (..., blocks, block + k - 1), overlapping
    out = windows.reshape(-1, block + k - 1) @ _banded(taps, block)  # one copy, one product
    return out.view(*windows.shape[:-1], block).flatten(-2)[..., :n]


def _banded_conv_cols(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Valid 1-D convolution along the second-last axis (rows of the transposed image)."""
    return _banded_conv_rows(x.transpose(-1, -2), taps).transpose(-1, -2)


def conv_valid(x: torch.Tensor, plan: BlurPlan, ksize: int | None = None) -> torch.Tensor:
    """Apply the plan's kernel without padding: ``(B, C, h + 2r, w + 2r)`` -> ``(B, C, h, w)``."""
    if plan.radius == 0:
        return x
    c = x.shape[1]
    if plan.kind == "gaussian":
        taps = gaussian_kernel1d(plan.size, ksize, dtype=x.dtype, device=x.device)
        k = taps.numel()
        if plan.path == "direct":
            return _banded_conv_cols(_banded_conv_rows(x, taps), taps)
        return _fft_conv_axis_valid(_fft_conv_axis_valid(x, taps, -1), taps, -2)
    kernel = disc_kernel2d(plan.size, dtype=x.dtype, device=x.device)
    k = kernel.shape[-1]
    if plan.path == "direct":
        return F.conv2d(x, kernel.view(1, 1, k, k).expand(c, 1, k, k), groups=c)
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    size = (next_fast_len(x.shape[-2]), next_fast_len(x.shape[-1]))
    y = torch.fft.irfft2(torch.fft.rfft2(x, s=size) * torch.fft.rfft2(kernel, s=size), s=size)
    return y[..., k - 1 : k - 1 + h, k - 1 : k - 1 + w]


def _border_index(n: int, factor: int, pad: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Source pixels of the ``pad`` mirrored blocks before the image and of the partial +
    ``pad`` mirrored blocks after its whole blocks, along one axis; and the number of the former."""
    body = n // factor
    before = _reflect_index(n, pad * factor, 0, False, device)[: pad * factor]
    after = _reflect_index(n, 0, (-(-n // factor) + pad) * factor - n, False, device)[body * factor :]
    return torch.cat([before, after]), pad


def pool_padded(x: torch.Tensor, factor: int, pad: int) -> torch.Tensor:
    """Downsample ``(B, C, H, W)`` by averaging ``factor x factor`` blocks of the reflect-101
    extended image, with ``pad`` extra blocks on every side:
    ``(B, C, ceil(H / f) + 2 pad, ceil(W / f) + 2 pad)``.

    The bulk is one ``avg_pool2d`` of the image itself; the mirrored borders (and a partial last
    block) come from two thin gathered strips, so the whole costs a handful of operations.
    """
    h, w = x.shape[-2:]
    cols, left = _border_index(w, factor, pad, x.device)
    rows, top = _border_index(h, factor, pad, x.device)
    pieces = []
    if rows.numel():  # top and bottom strips over all columns, corners included
        body_cols = torch.arange((w // factor) * factor, device=x.device)
        all_cols = torch.cat([cols[: left * factor], body_cols, cols[left * factor :]])
        ends = F.avg_pool2d(x.index_select(-2, rows).index_select(-1, all_cols), factor)
        pieces.append(ends[..., :top, :])
    if h >= factor:  # the whole rows: left strip | body | right strip
        sides = F.avg_pool2d(x.index_select(-1, cols), factor) if cols.numel() else None
        middle = [sides[..., :left]] if sides is not None and left else []
        if w >= factor:
            middle.append(F.avg_pool2d(x, factor))
        if sides is not None and sides.shape[-1] > left:
            middle.append(sides[..., left:])
        pieces.append(torch.cat(middle, -1) if len(middle) > 1 else middle[0])
    if rows.numel() and ends.shape[-2] > top:
        pieces.append(ends[..., top:, :])
    return torch.cat(pieces, -2) if len(pieces) > 1 else pieces[0]


def upsample_crop(y: torch.Tensor, factor: int, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=False``) of a low-res image that has one extra block on
    every side, cropped to ``size``: block ``i`` lands on the centre of the pixels it pooled.

    Without autograd it writes each of the ``factor`` output phases (an even ``factor`` never puts
    an output on a sample) as one lerp of two shifted views straight into the result (~3x less CPU
    time than ``F.interpolate`` at 12 MP, measured); equal to ``F.interpolate`` up to rounding.
    """
    h, w = y.shape[-2:]
    if factor % 2 or (torch.is_grad_enabled() and y.requires_grad):
        up = F.interpolate(y, size=(h * factor, w * factor), mode="bilinear", align_corners=False)
        return up[..., factor : factor + size[0], factor : factor + size[1]]
    rows, cols = -(-size[0] // factor), -(-size[1] // factor)
    wide = y.new_empty(*y.shape[:-1], cols * factor)
    _upsample_axis(y, wide, -1, cols, factor)
    out = y.new_empty(*y.shape[:-2], rows * factor, cols * factor)
    _upsample_axis(wide, out, -2, rows, factor)
    return out[..., : size[0], : size[1]]


def _upsample_axis(src: torch.Tensor, dst: torch.Tensor, dim: int, blocks: int, factor: int) -> None:
    """Fill ``dst`` (``blocks * factor`` long along ``dim``) from ``src`` (``blocks + 2`` long)."""
    if dim == -1:
        phases = dst.view(*dst.shape[:-1], blocks, factor)
    else:
        phases = dst.view(*dst.shape[:-2], blocks, factor, dst.shape[-1])
    for p in range(factor):
        c = (p + 0.5) / factor - 0.5  # output offset from block j + 1's centre, in blocks
        lo, weight = (0, c + 1) if c < 0 else (1, c)  # between blocks j + lo and j + lo + 1
        out = phases[..., p] if dim == -1 else phases[..., p, :]
        torch.lerp(src.narrow(dim, lo, blocks), src.narrow(dim, lo + 1, blocks), weight, out=out)


def blur_map(
    inputs: Sequence[torch.Tensor],
    plan: BlurPlan,
    combine: Callable[[list[torch.Tensor]], torch.Tensor] | None = None,
    ksize: int | None = None,
) -> torch.Tensor:
    """Blur every ``(B, C_i, H, W)`` input with ``plan``, ``combine`` the results, return full size.

    On the downsample path ``combine`` runs at low resolution, before the single upsampling, so
    e.g. a normalised convolution divides small images. ``combine`` must be smooth (it is
    interpolated); default: the first input's blur.
    """
    combine = combine or (lambda ys: ys[0])
    size = inputs[0].shape[-2:]
    channels = [x.shape[1] for x in inputs]
    r = plan.radius
    if plan.factor == 1:
        padded = [pad_reflect(pad_reflect(x, -1, r, r), -2, r, r) for x in inputs]
        x = padded[0] if len(padded) == 1 else torch.cat(padded, 1)
        return combine(list(conv_valid(x, plan, ksize).split(channels, 1)))
    lows = [pool_padded(x, plan.factor, r + 1) for x in inputs]
    x = lows[0] if len(lows) == 1 else torch.cat(lows, 1)
    y = combine(list(conv_valid(x, plan).split(channels, 1)))
    return upsample_crop(y, plan.factor, (size[0], size[1]))
