"""Outputs that are silently wrong no more: a photo's colour profile and transparency reach its
portrait (reader and writer of :mod:`portraitseg.io`, the render CLI, the ONNX runner), and a
render without blur (strength 0) returns the photo exactly, for every preset and both render
paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from portraitseg.cli.main import main as cli_main
from portraitseg.io import (
    TRANSPARENT_BACKGROUND,
    read_image,
    read_photo,
    write_image,
)
from portraitseg.pipeline import PortraitPipeline, render_preset
from portraitseg.presets import preset_names
from portraitseg.render import render_portrait
from portraitseg.render.fast import render_portrait_fast

#: an RGB ICC profile (stands for Display P3, Adobe RGB...): its bytes must reach the outputs
PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def noise(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def profile_of(path: Path) -> bytes | None:
    with Image.open(path) as img:
        return img.info.get("icc_profile")


def transparent_rgba(h: int = 48, w: int = 64) -> np.ndarray:
    """Grey noise, its left third fully transparent over a hidden pure red, a soft band after."""
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = noise(h, w)[..., :1] // 2 + 64  # grey: R = G = B
    rgba[..., 3] = 255
    rgba[:, : w // 3, :3] = (255, 0, 0)
    rgba[:, : w // 3, 3] = 0
    rgba[:, w // 3 : w // 2, 3] = 128
    return rgba


@pytest.fixture(scope="module")
def onnx_model(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    from portraitseg.models.checkpoint import load_segmenter
    from portraitseg.onnx_export import export_onnx

    net, _ = load_segmenter(tiny_weights)
    return export_onnx(net, tmp_path_factory.mktemp("onnx") / "m.onnx", image_size=(64, 64))


def render(model: Path, out: Path, *args: object) -> int:
    return cli_main(["render", *map(str, args), "--ckpt", str(model), "-o", str(out), "--device", "cpu",
                     "--subject", "face"])


# ------------------------------------------------------------------------------ colour profile


@pytest.mark.parametrize("fmt", [".jpg", ".png", ".webp", ".tif"])
def test_reader_and_writer_carry_the_profile(tmp_path, fmt):
    src = tmp_path / f"p3{fmt}"
    Image.fromarray(noise()).save(src, icc_profile=PROFILE)
    photo = read_photo(src)
    assert photo.icc_profile == PROFILE and photo.alpha is None
    out = write_image(tmp_path / f"out{fmt}", photo.rgb, icc_profile=photo.icc_profile)
    assert profile_of(out) == PROFILE


def test_no_profile_stays_no_profile(tmp_path):
    src = tmp_path / "plain.jpg"
    Image.fromarray(noise()).save(src)
    assert read_photo(src).icc_profile is None


def test_a_profile_that_does_not_describe_rgb_pixels_is_not_carried(tmp_path):
    """An RGB image tagged with a Lab profile: the profile cannot describe the RGB output, so it
    is not written with it, and the reader says so (no silent change of meaning)."""
    src = tmp_path / "lab.png"
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.fromarray(noise()).save(src, icc_profile=lab)
    photo = read_photo(src)
    assert photo.icc_profile is None
    assert photo.notes == ["its embedded Lab colour profile could not be applied; read as sRGB"]
    np.testing.assert_array_equal(photo.rgb, noise())


@pytest.mark.parametrize("fmt", [".jpg", ".png"])
def test_render_cli_keeps_the_profile(tmp_path, tiny_weights, capsys, fmt):
    src = tmp_path / f"p3{fmt}"
    Image.fromarray(noise()).save(src, icc_profile=PROFILE)
    out = tmp_path / "out"
    assert render(tiny_weights, out, src, "--stages", "--save-alpha") == 0
    assert profile_of(out / f"p3_portrait{fmt}") == PROFILE
    assert profile_of(out / "p3_stages.jpg") == PROFILE  # its panels are the photo's pixels too
    assert profile_of(out / "p3_alpha.png") is None  # a matte is data, not colour


def test_onnx_runner_keeps_the_profile_and_the_alpha(tmp_path, onnx_model, capsys):
    from portraitseg.onnx_infer import main as onnx_main

    src = tmp_path / "p3.png"
    rgba = transparent_rgba()
    Image.fromarray(rgba, "RGBA").save(src, icc_profile=PROFILE)
    out = tmp_path / "portrait.png"
    assert onnx_main([str(onnx_model), str(src), str(out)]) == 0
    assert "has transparent pixels" in capsys.readouterr().err
    assert profile_of(out) == PROFILE
    with Image.open(out) as img:
        assert img.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(img)[..., 3], rgba[..., 3])


# ------------------------------------------------------------------------------ transparency


def _transparent_inputs(folder: Path) -> dict[str, Path]:
    """The same transparency as RGBA PNG, palette PNG with a transparent index, LA PNG, WebP, GIF."""
    folder.mkdir(parents=True, exist_ok=True)
    rgba = transparent_rgba()
    paths = {"rgba": folder / "rgba.png", "webp": folder / "rgba.webp"}
    Image.fromarray(rgba, "RGBA").save(paths["rgba"])
    Image.fromarray(rgba, "RGBA").save(paths["webp"], lossless=True)
    palette = np.zeros(rgba.shape[:2], np.uint8)
    palette[:, rgba.shape[1] // 3 :] = 1  # index 0: hidden red, transparent; index 1: grey
    img = Image.fromarray(palette, "P")
    img.putpalette([255, 0, 0, 128, 128, 128] + [0] * 762)
    paths["palette"] = folder / "palette.png"
    img.save(paths["palette"], transparency=0)
    paths["gif"] = folder / "palette.gif"
    img.save(paths["gif"], transparency=0)
    return paths


def test_reader_composites_on_the_stated_background_and_returns_the_alpha(tmp_path):
    for name, path in _transparent_inputs(tmp_path).items():
        photo = read_photo(path)
        assert photo.alpha is not None, name
        clear = photo.alpha == 0
        assert clear.any(), name
        # the hidden red never shows: transparent pixels are the background colour
        background = np.broadcast_to(TRANSPARENT_BACKGROUND, (int(clear.sum()), 3))
        np.testing.assert_array_equal(photo.rgb[clear], background)
        np.testing.assert_array_equal(read_image(path), photo.rgb)  # one reader for every caller


def test_opaque_rgba_has_no_alpha(tmp_path):
    path = tmp_path / "opaque.png"
    Image.fromarray(np.dstack([noise(), np.full((48, 64), 255, np.uint8)]), "RGBA").save(path)
    assert read_photo(path).alpha is None


@pytest.mark.parametrize("name, suffix", [("rgba", ".png"), ("palette", ".png"), ("webp", ".webp"),
                                          ("gif", ".png")])
def test_render_cli_portrait_keeps_the_photos_alpha(tmp_path, tiny_weights, capsys, name, suffix):
    src = _transparent_inputs(tmp_path / "in")[name]
    out = tmp_path / "out"
    assert render(tiny_weights, out, src, "--render", "gaussian") == 0
    err = capsys.readouterr().err
    assert "has transparent pixels: rendered composited on white; the output keeps the photo's alpha" in err
    portrait = out / f"{src.stem}_portrait{suffix}"
    with Image.open(portrait) as img:
        rgba = np.asarray(img.convert("RGBA"))
    np.testing.assert_array_equal(rgba[..., 3], read_photo(src).alpha)
    # the hidden red is not blurred into the visible part of the portrait
    visible = rgba[..., 3] == 255
    assert (rgba[visible][:, 0].astype(int) - rgba[visible][:, 1]).max() <= 2


# ------------------------------------------------------------------------------ no blur, no change


def _photo_and_alpha() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 72, 96, generator=g)
    alpha = torch.zeros(1, 1, 18, 24)
    alpha[..., 4:14, 6:18] = 1.0
    alpha = torch.nn.functional.avg_pool2d(alpha, 5, 1, 2)  # a soft outline, where a leak shows
    return image, alpha


@pytest.mark.parametrize("preset", preset_names())
@pytest.mark.parametrize("zero", [{"strength": 0.0, "sigma": None}, {"sigma": 0.0}])
def test_no_blur_returns_the_photo_exactly(preset, zero):
    image, alpha = _photo_and_alpha()
    options = {**render_preset(preset).options, **zero}
    reference, _ = render_portrait(image, alpha=alpha, **options)
    assert torch.equal(reference, image)
    fast, _ = render_portrait_fast(image, alpha, factor=2, **options)
    assert torch.equal(fast, image)


@pytest.mark.parametrize("preset", preset_names())
def test_blur_does_change_the_photo(preset):
    """The control: with its own strength each preset does change the photo (so the equality
    above is the strength-0 case, not a render that does nothing)."""
    image, alpha = _photo_and_alpha()
    out, _ = render_portrait(image, alpha=alpha, **render_preset(preset).options)
    assert (out - image).abs().max() > 0.05


@pytest.mark.parametrize("preset", preset_names())
def test_strength_zero_render_cli_writes_the_photos_pixels(tmp_path, tiny_weights, capsys, preset):
    src = tmp_path / "photo.png"
    Image.fromarray(noise()).save(src)
    out = tmp_path / "out"
    assert render(tiny_weights, out, src, "--render", preset, "--strength", "0") == 0
    np.testing.assert_array_equal(read_image(out / "photo_portrait.png"), read_image(src))


def test_pipeline_fast_and_reference_agree_at_strength_zero(tiny_weights):
    image = torch.from_numpy(noise()).permute(2, 0, 1)[None]
    for fast in (True, False):
        pipe = PortraitPipeline.from_pretrained(tiny_weights, render="disc", device="cpu", fast=fast,
                                                render_options={"strength": 0.0, "sigma": None})
        with torch.inference_mode():
            out = pipe(image).portrait
        assert torch.equal((out * 255).round().to(torch.uint8), image), fast
