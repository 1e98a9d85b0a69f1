"""Subject alpha: softmax of kept classes, keep validation, guided refinement, feathering."""

from __future__ import annotations

import pytest
import torch

from portraitseg.render import feather_alpha, refine_alpha, subject_alpha


def test_alpha_is_sum_of_kept_softmax():
    logits = torch.randn(2, 11, 8, 9, dtype=torch.float64) * 3
    alpha = subject_alpha(logits, (1, 10))
    expected = logits.softmax(1)[:, [1, 10]].sum(1, keepdim=True)
    torch.testing.assert_close(alpha, expected)
    torch.testing.assert_close(subject_alpha(logits.softmax(1), (1, 10), from_logits=False), expected)
    assert alpha.shape == (2, 1, 8, 9)


def test_alpha_default_keeps_every_non_background_class():
    logits = torch.randn(1, 11, 4, 4)
    torch.testing.assert_close(subject_alpha(logits), 1 - logits.softmax(1)[:, :1])


def test_alpha_stable_for_huge_logits_and_resized():
    logits = torch.zeros(1, 3, 4, 4)
    logits[:, 2] = 1e4
    alpha = subject_alpha(logits, (2,), size=(16, 12))
    assert alpha.shape == (1, 1, 16, 12) and torch.isfinite(alpha).all()
    torch.testing.assert_close(alpha, torch.ones_like(alpha))


def test_keep_checked_against_channels():
    with pytest.raises(ValueError, match=r"K=2 .*keep=\(1,\)"):
        subject_alpha(torch.randn(1, 2, 4, 4), (10,))
    with pytest.raises(ValueError, match="at least one class"):
        subject_alpha(torch.randn(1, 2, 4, 4), ())
    with pytest.raises(ValueError, match="K >= 2"):
        subject_alpha(torch.randn(1, 1, 4, 4), (0,))
    with pytest.raises(ValueError, match="probs values must be in"):
        subject_alpha(torch.randn(1, 3, 4, 4) * 5, (1,), from_logits=False)
    with pytest.raises(TypeError, match="floating"):
        subject_alpha(torch.zeros(1, 3, 4, 4, dtype=torch.long), (1,))


def test_refine_snaps_blurry_alpha_to_image_edge():
    h, w = 64, 64
    image = torch.zeros(1, 3, h, w)
    image[..., :, 32:] = 1.0  # sharp vertical edge at column 32
    truth = (torch.arange(w) >= 32).float().expand(1, 1, h, w)
    blurry = torch.nn.functional.interpolate(truth[..., ::8, ::8], size=(h, w), mode="bilinear")
    refined = refine_alpha(blurry, image, radius=6, eps=1e-4)
    assert refined.shape == blurry.shape
    assert float(refined.min()) >= 0 and float(refined.max()) <= 1
    # the ramp of the upsampled alpha becomes a jump at the image's edge
    assert float((blurry[..., 32] - blurry[..., 31]).min()) < 0.2
    assert float((refined[..., 32] - refined[..., 31]).min()) > 0.5
    assert refine_alpha(blurry, image, radius=0) is blurry
    with pytest.raises(ValueError, match="share B, H, W"):
        refine_alpha(blurry, image[..., :32], radius=2)


def test_feather_softens_edge():
    alpha = (torch.arange(32) >= 16).float().expand(1, 1, 8, 32)
    soft = feather_alpha(alpha, 2.0)
    assert 0.3 < float(soft[0, 0, 4, 16]) < 0.8 and float(soft[0, 0, 4, 0]) == pytest.approx(0, abs=1e-6)
    assert feather_alpha(alpha, 0.0) is alpha


def test_alpha_gradcheck():
    logits = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    image = torch.rand(1, 3, 10, 12, dtype=torch.float64, requires_grad=True)

    def fn(lg, im):
        return refine_alpha(subject_alpha(lg, (1, 3), size=(10, 12)), im, radius=2, eps=1e-2)

    assert torch.autograd.gradcheck(fn, (logits, image))
