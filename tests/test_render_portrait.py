"""render_portrait / PortraitRenderer / render_loss and the conf/render presets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from portraitseg.classes import CLASS_NAMES, class_ids
from portraitseg.render import DEFAULTS, PortraitRenderer, render_loss, render_portrait

CONF = Path(__file__).resolve().parents[1] / "conf" / "render"
PRESETS = sorted(p.stem for p in CONF.glob("*.yaml"))
HAIR, SKIN = CLASS_NAMES.index("hair"), CLASS_NAMES.index("skin")

#: Every option of the pipeline off: the bare composite.
PLAIN = {"refine": 0.0, "feather": 0.0, "falloff": 0.0, "highlights": 0.0}


def _scene(b: int = 1, h: int = 64, w: int = 80, seed: int = 0):
    """Textured image and a label map: hair on the left third, skin in the middle, background right."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=gen)
    label = torch.zeros(b, h, w, dtype=torch.long)
    label[..., : w // 3] = HAIR
    label[..., w // 3 : 2 * w // 3] = SKIN
    return image, label


def _one_hot(label: torch.Tensor, k: int = 11) -> torch.Tensor:
    return torch.nn.functional.one_hot(label, k).permute(0, 3, 1, 2).float()


def test_shapes_dtypes_and_range():
    image = torch.rand(2, 3, 70, 90)
    logits = torch.randn(2, 11, 35, 45)
    for preset in PRESETS:
        renderer = _instantiate(preset)
        portrait, alpha = renderer(image, logits)
        assert portrait.shape == image.shape and alpha.shape == (2, 1, 70, 90)
        assert portrait.dtype == torch.float32 and alpha.dtype == torch.float32
        assert float(portrait.min()) >= 0 and float(portrait.max()) <= 1 + 1e-6
    half, half_alpha = render_portrait(image.half(), logits=logits.half())
    assert half.dtype == torch.float16 and half_alpha.dtype == torch.float16
    double, _ = render_portrait(image.double(), alpha=torch.rand(2, 1, 20, 30, dtype=torch.float64))
    assert double.dtype == torch.float64


def test_naive_gaussian_is_the_paper_render():
    rng = np.random.default_rng(0)
    img = rng.random((60, 75, 3), dtype=np.float32)
    a = rng.random((60, 75), dtype=np.float32)
    paper = a[..., None] * img + (1 - a[..., None]) * cv2.GaussianBlur(
        img, (0, 0), 6.0, borderType=cv2.BORDER_REFLECT_101
    )
    portrait, alpha = render_portrait(
        torch.from_numpy(img).permute(2, 0, 1)[None],
        alpha=torch.from_numpy(a)[None, None],
        blur="gaussian",
        mode="naive",
        sigma=6.0,
        method="exact",
        **PLAIN,
    )
    assert np.abs(portrait[0].permute(1, 2, 0).numpy() - paper).max() < 1e-4
    # the preset is the same render (strength is relative to the short side: 0.1 * 60 = 6 px)
    preset = _instantiate("gaussian", strength=0.1)
    torch.testing.assert_close(preset(torch.from_numpy(img).permute(2, 0, 1)[None], alpha=alpha)[0], portrait)


@pytest.mark.parametrize("mode", ["naive", "halo_free"])
def test_selective_classes(mode):
    image, label = _scene()
    probs = _one_hot(label)
    for keep, sharp, blurred in [
        ((HAIR,), slice(0, 20), slice(34, 46)),
        ((SKIN,), slice(34, 46), slice(0, 20)),
    ]:
        portrait, alpha = render_portrait(
            image, probs=probs, keep=keep, blur="gaussian", mode=mode, sigma=3.0, **PLAIN
        )
        torch.testing.assert_close(portrait[..., sharp], image[..., sharp])  # kept: untouched
        assert float((portrait - image)[..., blurred].abs().mean()) > 0.1  # not kept: blurred
        assert float((portrait - image)[..., 60:].abs().mean()) > 0.1  # background: blurred
        torch.testing.assert_close(alpha[0, 0, :, sharp], torch.ones_like(alpha[0, 0, :, sharp]))
    # the module parses names, as the configs give them
    renderer = PortraitRenderer(keep=["hair"], blur="gaussian", mode=mode, sigma=3.0, **PLAIN)
    assert renderer.keep == (HAIR,)
    torch.testing.assert_close(
        renderer(image, probs=probs)[0],
        render_portrait(image, probs=probs, keep=(HAIR,), blur="gaussian", mode=mode, sigma=3.0, **PLAIN)[0],
    )


def test_batch_consistency_and_module_equals_function():
    image, label = _scene(b=3)
    logits = torch.randn(3, 11, 32, 40, generator=torch.Generator().manual_seed(2))
    renderer = PortraitRenderer(strength=0.05)
    batched, batched_alpha = renderer(image, logits)
    for i in range(3):
        single, single_alpha = renderer(image[i : i + 1], logits[i : i + 1])
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=0)
        torch.testing.assert_close(batched_alpha[i : i + 1], single_alpha, atol=1e-5, rtol=0)
    options = {**DEFAULTS, "strength": 0.05}
    torch.testing.assert_close(batched, render_portrait(image, logits=logits, **options)[0])


def test_input_errors():
    image = torch.rand(1, 3, 16, 16)
    logits = torch.randn(1, 11, 8, 8)
    with pytest.raises(ValueError, match="exactly one of"):
        render_portrait(image)
    with pytest.raises(ValueError, match="exactly one of"):
        render_portrait(image, logits=logits, alpha=torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        render_portrait(torch.rand(1, 4, 16, 16), logits=logits)
    with pytest.raises(TypeError, match="image.float\\(\\) / 255"):
        render_portrait((image * 255).to(torch.uint8), logits=logits)
    with pytest.raises(ValueError, match="image values must be in \\[0.0, 1.0\\]"):
        render_portrait(image * 255, logits=logits)
    with pytest.raises(ValueError, match="alpha values"):
        render_portrait(image, alpha=torch.rand(1, 1, 8, 8) + 1)
    with pytest.raises(ValueError, match="alpha must have shape"):
        render_portrait(image, alpha=torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="batch"):
        render_portrait(image, logits=torch.randn(2, 11, 8, 8))
    with pytest.raises(ValueError, match="K=2"):
        render_portrait(image, logits=torch.randn(1, 2, 8, 8))  # default keep = Helen classes 1..10
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        render_portrait(image, logits=torch.randn(11, 8, 8))
    render_portrait(image, logits=torch.randn(1, 2, 8, 8), keep=(1,))  # a 2-class person model


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("blur", "box", "blur='box'"),
        ("mode", "soft", "mode='soft'"),
        ("method", "fast", "method='fast'"),
        ("strength", -0.1, "strength"),
        ("sigma", -1.0, "sigma"),
        ("falloff_levels", 1, "falloff_levels"),
        ("highlight_threshold", 1.0, "highlight_threshold"),
        ("keep", ["ears"], "unknown class 'ears'"),
    ],
)
def test_bad_options_fail_at_construction(option, value, message):
    with pytest.raises(ValueError, match=message):
        PortraitRenderer(**{option: value})
    if option != "keep":
        with pytest.raises(ValueError, match=message):
            render_portrait(torch.rand(1, 3, 8, 8), alpha=torch.rand(1, 1, 8, 8), **{option: value})


def _instantiate(preset: str, **overrides):
    from hydra.utils import instantiate

    cfg = OmegaConf.load(CONF / f"{preset}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return instantiate(cfg)


def test_presets():
    assert {"gaussian", "halo_free", "disc"} <= set(PRESETS)
    for preset in PRESETS:
        renderer = _instantiate(preset)
        assert isinstance(renderer, PortraitRenderer)
        cfg = OmegaConf.load(CONF / f"{preset}.yaml")
        assert set(DEFAULTS) <= set(cfg), f"{preset}.yaml lacks {set(DEFAULTS) - set(cfg)}"
    assert _instantiate("gaussian").options == {
        **DEFAULTS,
        **{k: v for k, v in OmegaConf.load(CONF / "gaussian.yaml").items() if k in DEFAULTS},
    }
    assert _instantiate("gaussian").options["mode"] == "naive"
    # the function / module defaults are the disc preset, the best render
    assert _instantiate("disc").options == PortraitRenderer().options == DEFAULTS
    # keep as the configs and the CLI give it
    assert _instantiate("disc", keep=["hair", "skin"]).keep == (SKIN, HAIR)
    assert _instantiate("disc", keep="face,hair").keep == class_ids("face,hair")
    assert _instantiate("disc", keep=[1, 10]).keep == (1, 10)


GRAD_CASES = [
    pytest.param(
        dict(blur=b, mode=m, falloff=f, refine=r, highlights=h), id=f"{b}-{m}-falloff{f}-refine{r}-hl{h}"
    )
    for b in ("gaussian", "disc")
    for m in ("naive", "halo_free")
    for f, r, h in ((0.0, 0.0, 0.0), (0.4, 0.2, 0.0), (0.4, 0.0, 1.5))
]


@pytest.mark.parametrize("options", GRAD_CASES)
def test_gradcheck_wrt_image_and_probs(options):
    """float64 gradcheck of the whole render with respect to the image and the probabilities."""
    gen = torch.Generator().manual_seed(0)
    image = (0.1 + 0.8 * torch.rand(1, 3, 12, 12, generator=gen, dtype=torch.float64)).requires_grad_()
    probs = torch.rand(1, 3, 6, 6, generator=gen, dtype=torch.float64).softmax(1).requires_grad_()

    def fn(im, pr):
        return render_portrait(im, probs=pr, keep=(1, 2), sigma=2.0, feather=0.05, **options)[0]

    assert torch.autograd.gradcheck(fn, (image, probs), fast_mode=True)


def test_gradcheck_fast_path_full_jacobian():
    """The downsample path (sigma >= 8) with every option on, full (slow-mode) Jacobian."""
    gen = torch.Generator().manual_seed(1)
    image = (0.1 + 0.8 * torch.rand(1, 3, 8, 10, generator=gen, dtype=torch.float64)).requires_grad_()
    logits = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64).requires_grad_()

    def fn(im, lg):
        return render_portrait(im, logits=lg, keep=(1,), sigma=9.0, falloff=0.5, refine=0.0)[0]

    assert torch.autograd.gradcheck(fn, (image, logits))


def test_render_loss():
    image, label = _scene(b=2, h=32, w=40)
    renderer = PortraitRenderer(strength=0.1)
    perfect = _one_hot(label)
    assert float(render_loss(image, perfect, label, renderer)) == pytest.approx(0.0, abs=1e-6)
    # a noisy prediction of the scene (random logits would call nearly everything subject)
    logits = (
        4 * perfect + torch.randn(2, 11, 32, 40, generator=torch.Generator().manual_seed(3))
    ).requires_grad_()
    loss = render_loss(image, logits.softmax(1), label, renderer)
    assert loss.ndim == 0 and float(loss.detach()) > 0.01
    loss.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="target_mask must have shape"):
        render_loss(image, perfect, label[:, :16], renderer)
    with pytest.raises(TypeError, match="integer class ids"):
        render_loss(image, perfect, label.float(), renderer)
    with pytest.raises(ValueError, match="target_mask values"):
        render_loss(image, perfect, label + 11, renderer)


def test_forward_reads_no_values():
    """On meta tensors (shapes, no values) any .item() / value branch would raise: none happens."""
    image = torch.empty(2, 3, 200, 300, device="meta")
    logits = torch.empty(2, 11, 100, 150, device="meta")
    for preset in PRESETS:
        portrait, alpha = _instantiate(preset)(image, logits)
        assert portrait.shape == image.shape and alpha.shape == (2, 1, 200, 300)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_without_syncs():
    image, label = _scene(b=2)
    logits = torch.randn(2, 11, 32, 40)
    renderer = PortraitRenderer(strength=0.2)
    cpu = renderer(image, logits)[0]
    image_cuda, logits_cuda = image.cuda(), logits.cuda()
    renderer(image_cuda, logits_cuda)  # first call copies the (cached) kernels to the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu = renderer(image_cuda, logits_cuda)[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
