"""Blur kernels and paths: OpenCV exactness, fast-path error bounds, shapes, errors, gradients."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from portraitseg.render import blur as B
from portraitseg.render.blur import (
    blur_plan,
    boost_highlights,
    disc_blur,
    disc_kernel2d,
    gaussian_blur,
    gaussian_kernel1d,
    linear_to_srgb,
    srgb_to_linear,
)


def _photo(h: int = 192, w: int = 256) -> np.ndarray:
    """A crop of a real photo at native resolution (fine texture kept), float32 HWC in [0, 1]."""
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()[40 : 40 + h, 150 : 150 + w].astype(np.float32) / 255.0


def _to_t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]


def _to_np(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy()


def _cv2_blur(img: np.ndarray, sigma: float, ksize: int = 0) -> np.ndarray:
    out = cv2.GaussianBlur(img, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT_101)
    return out if out.ndim == 3 else out[..., None]


@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.5, 7.3, 16.0])
def test_kernel_matches_opencv(sigma):
    ksize = B.gaussian_ksize(sigma)
    ours = gaussian_kernel1d(sigma, dtype=torch.float64).numpy()
    ref = cv2.getGaussianKernel(ksize, sigma, cv2.CV_64F)[:, 0]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert ksize == int(round(sigma * 8 + 1)) | 1


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (5, 7), (1, 9)])
@pytest.mark.parametrize("sigma", [0.8, 2.0, 4.5, 9.0, 20.0])
@pytest.mark.parametrize("method", ["exact", "direct", "fft"])
def test_gaussian_exact_matches_cv2(size, sigma, method):
    rng = np.random.default_rng(0)
    img = rng.random((*size, 3), dtype=np.float32)
    ours = _to_np(gaussian_blur(_to_t(img), sigma, method))
    # kernels larger than the image fold at the borders repeatedly, as in OpenCV
    assert np.abs(ours - _cv2_blur(img, sigma)).max() < 1e-4


@pytest.mark.parametrize("ksize", [3, 9, 31])
def test_gaussian_explicit_ksize_matches_cv2(ksize):
    img = _photo(64, 96)
    ours = _to_np(gaussian_blur(_to_t(img), 3.0, "exact", ksize=ksize))
    assert np.abs(ours - _cv2_blur(img, 3.0, ksize)).max() < 1e-4


def test_auto_is_exact_below_sigma_8():
    img = _photo(64, 80)
    for sigma in (1.0, 3.0, 7.9):
        assert blur_plan("gaussian", sigma, 64, 80).factor == 1
        assert np.abs(_to_np(gaussian_blur(_to_t(img), sigma)) - _cv2_blur(img, sigma)).max() < 1e-4


@pytest.mark.parametrize("sigma", [8.0, 12.0, 16.0, 24.0, 32.0])
def test_downsample_path_error_bounds(sigma):
    """Documented bounds: <= 0.005 on a photo, <= 0.003 on white noise and on a unit edge."""
    h, w = 192, 256
    plan = blur_plan("gaussian", sigma, h, w)
    assert plan.factor >= 2 and plan.factor % 2 == 0 and sigma / plan.factor >= B.LOWRES_SIGMA
    photo = _photo(h, w)
    noise = np.random.default_rng(1).random((h, w, 3), dtype=np.float32)
    yy, xx = np.mgrid[:h, :w]
    for img, bound in [(photo, 0.005), (noise, 0.003)]:
        err = np.abs(_to_np(gaussian_blur(_to_t(img), sigma)) - _cv2_blur(img, sigma)).max()
        assert err <= bound, (sigma, err)
    for offset in range(plan.factor):  # every phase of the pooling grid
        for angle in (0.0, 0.4, np.pi / 2):
            edge = (((xx - 101 - offset) * np.cos(angle) + (yy - 90) * np.sin(angle)) > 0).astype(np.float32)
            edge = np.repeat(edge[..., None], 3, -1)
            err = np.abs(_to_np(gaussian_blur(_to_t(edge), sigma)) - _cv2_blur(edge, sigma)).max()
            assert err <= 0.003, (sigma, offset, angle, err)


def test_method_exact_forces_exact_for_large_sigma():
    img = _photo(96, 128)
    assert blur_plan("gaussian", 20.0, 96, 128, "exact").factor == 1
    assert np.abs(_to_np(gaussian_blur(_to_t(img), 20.0, "exact")) - _cv2_blur(img, 20.0)).max() < 1e-4


def test_disc_kernel():
    assert disc_kernel2d(0).tolist() == [[1.0]]
    for r in (1.0, 2.5, 7.0):
        k = disc_kernel2d(r, dtype=torch.float64)
        assert k.shape[-1] == 2 * int(np.floor(r + 0.5)) + 1
        assert abs(float(k.sum()) - 1) < 1e-12
        assert torch.equal(k, k.flip(0)) and torch.equal(k, k.T)
        assert r < 2 or float(k[0, 0]) == 0.0  # a disc, not a square
    # second moment per axis of a disc of radius r is about r^2 / 4
    k = disc_kernel2d(20.0, dtype=torch.float64)
    x = torch.arange(k.shape[0], dtype=torch.float64) - k.shape[0] // 2
    var = float((k.sum(0) * x**2).sum())
    assert abs(var - 20.0**2 / 4) / (20.0**2 / 4) < 0.02


@pytest.mark.parametrize("radius", [1.5, 4.0, 11.0])
def test_disc_direct_equals_fft(radius):
    x = torch.rand(2, 3, 40, 33, dtype=torch.float64)
    torch.testing.assert_close(
        disc_blur(x, radius, "direct"), disc_blur(x, radius, "fft"), atol=1e-10, rtol=0
    )


def test_disc_fast_path_error():
    img = _to_t(_photo(192, 256))
    for radius in (16.0, 32.0, 48.0):
        assert blur_plan("disc", radius, 192, 256).factor >= 2
        err = (disc_blur(img, radius) - disc_blur(img, radius, "exact")).abs().max()
        assert err <= 0.01, (radius, float(err))


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: gaussian_blur(x, 3.0),
        lambda x: gaussian_blur(x, 12.0),
        lambda x: disc_blur(x, 3.0),
        lambda x: disc_blur(x, 20.0),
    ],
)
def test_constant_preserved_batch_consistent_and_dtype(fn):
    const = torch.full((1, 2, 45, 38), 0.3)
    torch.testing.assert_close(fn(const), const, atol=1e-6, rtol=0)
    x = torch.rand(3, 3, 45, 38)
    batched = fn(x)
    assert batched.shape == x.shape and batched.dtype == x.dtype
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], fn(x[i : i + 1]), atol=1e-6, rtol=0)
    half = fn(x.half())
    assert half.dtype == torch.float16 and half.shape == x.shape


def test_blur_errors():
    with pytest.raises(TypeError, match="torch.Tensor"):
        gaussian_blur(np.zeros((1, 3, 8, 8)), 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gaussian_blur(torch.zeros(3, 8, 8), 1.0)
    with pytest.raises(TypeError, match="floating"):
        gaussian_blur(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 1.0)
    with pytest.raises(ValueError, match="no pixels"):
        gaussian_blur(torch.zeros(1, 3, 0, 8), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(torch.zeros(1, 3, 8, 8), 0.0)
    with pytest.raises(ValueError, match="method"):
        gaussian_blur(torch.zeros(1, 3, 8, 8), 1.0, "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ksize"):
        gaussian_blur(torch.zeros(1, 3, 8, 8), 1.0, "exact", ksize=4)
    with pytest.raises(ValueError, match="radius"):
        disc_blur(torch.zeros(1, 3, 8, 8), -1.0)


def test_srgb_linear_roundtrip_and_highlights():
    x = torch.linspace(0, 1, 1001, dtype=torch.float64).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-8, rtol=0)
    with torch.no_grad():  # the in-place inference path computes the same
        torch.testing.assert_close(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-8, rtol=0)
    assert abs(float(srgb_to_linear(torch.tensor(0.5))) - 0.214041) < 1e-6
    lin = srgb_to_linear(x)
    boosted = boost_highlights(lin, 2.0, 0.9)
    dark = x[0, 0, 0] < 0.9
    torch.testing.assert_close(boosted[..., dark], lin[..., dark])
    assert float(boosted[0, 0, 0, -1]) == pytest.approx(3.0)  # white -> 1 + gain
    # gradients of the conversions are finite at 0 (no inf * 0)
    z = torch.zeros(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    linear_to_srgb(srgb_to_linear(z)).sum().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(lambda x: gaussian_blur(x, 1.3, "direct"), id="gauss-direct"),
        pytest.param(lambda x: gaussian_blur(x, 1.3, "fft"), id="gauss-fft"),
        pytest.param(lambda x: gaussian_blur(x, 9.0), id="gauss-downsample"),
        pytest.param(lambda x: disc_blur(x, 1.5, "direct"), id="disc-direct"),
        pytest.param(lambda x: disc_blur(x, 5.0, "fft"), id="disc-fft"),
        pytest.param(lambda x: disc_blur(x, 16.0), id="disc-downsample"),
        pytest.param(lambda x: linear_to_srgb(boost_highlights(srgb_to_linear(x), 2.0, 0.5)), id="linear"),
    ],
)
def test_blur_gradcheck(fn):
    x = torch.rand(1, 3, 10, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))


def test_plans_depend_on_shapes_only():
    """Meta tensors carry no values: a blur that ran on them never read a value (no device sync)."""
    x = torch.empty(2, 3, 300, 400, device="meta")
    for sigma in (2.0, 6.0, 30.0):
        assert gaussian_blur(x, sigma).shape == x.shape
        assert disc_blur(x, sigma).shape == x.shape


@pytest.mark.parametrize("sigma", [8.0, 16.0])
def test_downsample_path_worst_case_bound(sigma):
    """The documented guarantee for any image in [0, 1]: the error at a pixel is at most the positive
    part of (fast - exact) operator row, read off by autograd for every phase of the pooling grid."""
    n = int(8 * sigma + 48)
    plan = blur_plan("gaussian", sigma, n, n)
    x = torch.zeros(1, 1, n, n, dtype=torch.float64, requires_grad=True)
    fast, exact = gaussian_blur(x, sigma), gaussian_blur(x, sigma, "exact")
    worst = 0.0
    for py in range(plan.factor):
        for px in range(plan.factor):
            c = (n // 2 + py, n // 2 + px)
            (g_fast,) = torch.autograd.grad(fast[0, 0, c[0], c[1]], x, retain_graph=True)
            (g_exact,) = torch.autograd.grad(exact[0, 0, c[0], c[1]], x, retain_graph=True)
            worst = max(worst, float((g_fast - g_exact).clamp_min(0).sum()))
    assert worst <= 0.04
