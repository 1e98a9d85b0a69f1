"""Compositing: the paper's formula, the halo test on a synthetic edge, falloff, gradients."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from portraitseg.render import (
    composite_halo_free,
    composite_naive,
    estimate_foreground,
    falloff_weights,
    graded_background,
    halo_free_background,
    naive_background,
)


def _bright_subject_scene(size: int = 96):
    """A bright orange disc (the subject, exact binary alpha) over a dark textured background."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    dist = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()
    alpha = (dist < size / 4).float()[None, None]
    gen = torch.Generator().manual_seed(0)
    background = 0.05 + 0.05 * torch.rand(1, 3, size, size, generator=gen)
    subject = torch.tensor([1.0, 0.8, 0.2]).view(1, 3, 1, 1).expand(1, 3, size, size)
    image = alpha * subject + (1 - alpha) * background
    return image, alpha, dist


def test_naive_is_the_paper_formula_with_opencv():
    rng = np.random.default_rng(0)
    img = rng.random((50, 70, 3), dtype=np.float32)
    a = rng.random((50, 70), dtype=np.float32)
    blurred = cv2.GaussianBlur(img, (0, 0), 5.0, borderType=cv2.BORDER_REFLECT_101)
    paper = a[..., None] * img + (1 - a[..., None]) * blurred
    image = torch.from_numpy(img).permute(2, 0, 1)[None]
    alpha = torch.from_numpy(a)[None, None]
    ours = composite_naive(image, alpha, 5.0, method="exact")[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - paper).max() < 1e-4


@pytest.mark.parametrize("kernel", ["gaussian", "disc"])
@pytest.mark.parametrize("method", ["exact", "auto"])
def test_halo_free_background_does_not_pick_up_subject_colour(kernel, method):
    image, alpha, dist = _bright_subject_scene()
    sigma = 10.0  # large enough for the downsample path under "auto"
    ring = ((dist >= 24 + 2) & (dist < 24 + 12))[None, None].expand(1, 3, -1, -1)
    naive = composite_naive(image, alpha, sigma, kernel=kernel, method=method)
    halo_free = composite_halo_free(image, alpha, sigma, kernel=kernel, method=method)
    # the background next to the subject: the naive render glows orange, the halo-free one stays dark
    assert float(naive[ring].max()) > 0.3
    assert float(halo_free[ring].max()) < 0.11
    assert float((halo_free - image)[ring].abs().max()) < 0.06
    inside = (alpha > 0.5).expand(1, 3, -1, -1)
    torch.testing.assert_close(halo_free[inside], image[inside])


def test_halo_free_limits():
    image = torch.rand(2, 3, 40, 50)
    zero = torch.zeros(2, 1, 40, 50)
    # no subject: the normalised convolution is the plain blur
    torch.testing.assert_close(
        halo_free_background(image, zero, 4.0), naive_background(image, 4.0), atol=1e-5, rtol=0
    )
    # all subject: the fallback fill (plain blur) where no background is near, and the subject on top
    torch.testing.assert_close(composite_halo_free(image, zero + 1, 4.0), image)
    torch.testing.assert_close(
        halo_free_background(image, zero + 1, 4.0), naive_background(image, 4.0), atol=1e-5, rtol=0
    )
    assert halo_free_background(image, zero, 0.0) is image


def test_falloff_weights():
    _, alpha, dist = _bright_subject_scene(128)
    w = falloff_weights(alpha, 16.0, 4)
    assert w.shape == (1, 4, 128, 128)
    torch.testing.assert_close(w.sum(1), torch.ones(1, 128, 128))
    assert float(w[0, 0][dist < 28].min()) > 0.95  # on the subject: the sharp level
    assert float(w[0, 3][dist > 32 + 24].min()) > 0.95  # far: the full blur
    with pytest.raises(ValueError, match="levels"):
        falloff_weights(alpha, 16.0, 1)


def test_graded_background_grows_with_distance():
    image, alpha, dist = _bright_subject_scene(128)
    image = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    graded = graded_background(image, alpha, 6.0, 20.0, mode="halo_free")
    uniform = graded_background(image, alpha, 6.0, 0.0, mode="halo_free")

    def change(x, lo, hi):
        band = ((dist > lo) & (dist < hi))[None, None].expand(1, 3, -1, -1)
        return float((x - image)[band].abs().mean())

    # the blur grows with the distance from the subject (radius 32) and stays below the uniform one
    assert change(graded, 33, 35) < change(graded, 40, 44) < change(graded, 50, 60)
    assert change(graded, 33, 35) < 0.85 * change(uniform, 33, 35)
    far = (dist > 60)[None, None].expand(1, 3, -1, -1)
    torch.testing.assert_close(graded[far], uniform[far], atol=0.02, rtol=0)
    torch.testing.assert_close(uniform, halo_free_background(image, alpha, 6.0))


def test_shape_errors():
    with pytest.raises(ValueError, match="alpha"):
        composite_halo_free(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 9), 2.0)
    with pytest.raises(ValueError, match="alpha"):
        composite_halo_free(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), 2.0)
    with pytest.raises(ValueError, match="mode"):
        graded_background(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8), 2.0, 0.0, mode="bogus")  # type: ignore[arg-type]


@pytest.mark.parametrize("kernel", ["gaussian", "disc"])
@pytest.mark.parametrize("sigma", [1.2, 9.0])
def test_halo_free_gradcheck(kernel, sigma):
    image = torch.rand(1, 3, 10, 12, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(1, 1, 10, 12, dtype=torch.float64, requires_grad=True)

    def fn(im, a):
        return composite_halo_free(im, a, sigma, kernel=kernel)

    assert torch.autograd.gradcheck(fn, (image, alpha), fast_mode=True)


def test_estimate_foreground_recovers_subject_colour_in_soft_alpha():
    """Photo = a F + (1 - a) B with a soft (hair-like) edge: a * estimate is much closer to a * F."""
    h, w = 64, 64
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, h, w)
    alpha = ((34 - xx) / 4).clamp(0, 1)  # a 4-px soft edge from subject (left) to background (right)
    fg = torch.tensor([0.9, 0.6, 0.3]).view(1, 3, 1, 1).expand(1, 3, h, w)
    bg = torch.tensor([0.1, 0.3, 0.8]).view(1, 3, 1, 1).expand(1, 3, h, w)
    image = alpha * fg + (1 - alpha) * bg
    soft = ((alpha > 0.05) & (alpha < 0.95)).expand(1, 3, h, w)
    hard = (alpha == 1).expand(1, 3, h, w)
    baseline = float(((image - fg) * alpha)[soft].abs().mean())  # the photo as the subject's colour
    for sigmas, factor in [((12.0, 3.0), 0.1), (None, 0.5)]:  # explicit, and the default fractions
        estimate = estimate_foreground(image, alpha, sigmas)
        assert float(((estimate - fg) * alpha)[soft].abs().mean()) < factor * baseline
        torch.testing.assert_close(estimate[hard], image[hard])
    # the halo-free render then matches a F + (1 - a) blur(B) = the photo more closely than with F = I
    with_estimate = float((composite_halo_free(image, alpha, 4.0) - image).abs().mean())
    without = float((composite_halo_free(image, alpha, 4.0, estimate=False) - image).abs().mean())
    assert with_estimate < 0.5 * without
