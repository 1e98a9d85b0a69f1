"""Inputs that used to give silently wrong results: multi-frame images, folder-layout name clashes,
image types one command took and another skipped, non-finite numbers in render presets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import portraitseg.cli.render as cli_render
from portraitseg.cli.main import main as cli_main
from portraitseg.cli.outputs import expand_inputs
from portraitseg.data.check import check_dataset
from portraitseg.data.layouts import discover
from portraitseg.io import IMAGE_SUFFIXES, MultiFrameWarning, read_image
from portraitseg.models.checkpoint import default_model_path


def frames(path: Path, n: int = 3, size: tuple[int, int] = (64, 48)) -> Path:
    """An ``n``-frame animated GIF / multi-page TIFF (format from the suffix)."""
    rng = np.random.default_rng(0)
    pages = [Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)) for _ in range(n)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def label(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ones(size[::-1], np.uint8)).save(path)
    return path


@pytest.mark.parametrize("suffix", [".gif", ".tif"])
def test_multi_frame_image_warns_naming_the_file(tmp_path, suffix):
    path = frames(tmp_path / f"anim{suffix}")
    with pytest.warns(MultiFrameWarning, match=rf"anim\{suffix}: has 3 frames .* only the first is used"):
        rgb = read_image(path)
    assert rgb.shape == (48, 64, 3)


def test_single_frame_image_does_not_warn(tmp_path, recwarn):
    path = tmp_path / "still.gif"
    Image.new("RGB", (8, 8)).save(path)
    read_image(path)
    assert not [w for w in recwarn if issubclass(w.category, MultiFrameWarning)]


def test_folder_layout_names_two_images_sharing_a_mask(tmp_path):
    (tmp_path / "images").mkdir()
    for suffix in (".jpg", ".png"):
        Image.new("RGB", (64, 48)).save(tmp_path / "images" / f"a{suffix}")
    label(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"a\.jpg, .*a\.png share the name 'a' and so the one mask .*a\.png"):
        discover(tmp_path, layout="folder")


def test_every_listed_image_type_is_taken_by_layouts_and_by_render_folders(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, suffix in enumerate(IMAGE_SUFFIXES):
        Image.new("RGB", (64, 48)).save(images / f"img{i}{suffix}")
        label(tmp_path / "masks" / f"img{i}.png")
    samples = discover(tmp_path, layout="folder")["train"]
    assert sorted(s.image.suffix for s in samples) == sorted(IMAGE_SUFFIXES)
    items, missing, _ = expand_inputs([str(images)])
    assert sorted(p.suffix for p, _ in items) == sorted(IMAGE_SUFFIXES) and not missing
    assert {".gif", ".ppm"} <= set(IMAGE_SUFFIXES)


def test_data_check_lists_every_problem_without_a_traceback(tmp_path, capsys):
    from portraitseg.data.__main__ import main as data_main

    images = tmp_path / "images"
    images.mkdir()
    for name in ("ok", "nomask1", "nomask2"):
        Image.new("RGB", (64, 48)).save(images / f"{name}.png")
    Image.new("RGB", (64, 48)).save(images / "twin.jpg")
    Image.new("RGB", (64, 48)).save(images / "twin.png")
    (images / "broken.png").write_bytes(b"not a png")
    for name in ("ok", "twin", "broken"):
        label(tmp_path / "masks" / f"{name}.png")
    frames(images / "anim.gif")
    label(tmp_path / "masks" / "anim.png")
    report = check_dataset(tmp_path)
    assert len(report.problems) == 5, report.problems
    text = "\n".join(report.problems)
    for expected in ("nomask1.png has no mask", "nomask2.png has no mask", "share the name 'twin'",
                     "broken.png: not an image", "anim.gif: has 3 frames"):
        assert expected in text
    assert data_main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "5 problem(s)" in out and "Traceback" not in out


def test_data_check_on_helenstar_lists_missing_files_and_bad_lines(tiny_helenstar, capsys):
    from portraitseg.data.__main__ import main as data_main

    lines = (tiny_helenstar / "train.txt").read_text().splitlines()
    lines[1] = "train/images/gone.png train/labels/label_1.png"
    lines[2] = "just-one-field"
    (tiny_helenstar / "train.txt").write_text("\n".join(lines) + "\n")
    (tiny_helenstar / "test" / "labels" / "label_0.png").unlink()
    assert data_main(["check", str(tiny_helenstar)]) == 1
    assert "3 problem(s)" in capsys.readouterr().out
    problems = "\n".join(check_dataset(tiny_helenstar).problems)
    assert "train.txt:2: image" in problems and "train.txt:3: expected '<image> <label>'" in problems
    assert "test.txt:1: label" in problems


def test_data_check_without_a_dataset_exits_2(tmp_path, capsys):
    from portraitseg.data.__main__ import main as data_main

    assert data_main(["check", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset root") and "does not exist" in err


@pytest.mark.skipif(default_model_path() is None, reason="no bundled default model in this checkout")
def test_render_warns_about_frames_it_drops(tmp_path, capsys):
    src = frames(tmp_path / "anim.gif")
    code = cli_main(["render", str(src), "-o", str(tmp_path / "out"), "--subject", "face",
                     "--render", "halo_free"])
    err = capsys.readouterr().err
    assert code == 0
    assert f"warning: {src}: has 3 frames (an animated or multi-page image); only the first is used" in err
    assert (tmp_path / "out" / "anim_portrait.png").is_file()


@pytest.mark.parametrize(("line", "message"), [
    ("highlights: .inf", "highlights=inf is not a finite number"),
    ("strength: 5.0", "strength=5.0 is out of range: must be in [0, 1]"),
    ("falloff_levels: 2.5", "falloff_levels=2.5 must be an integer"),
    ("person: {work_size: .nan}", "person.work_size=nan is not a finite number"),
])
@pytest.mark.skipif(default_model_path() is None, reason="no bundled default model in this checkout")
def test_render_preset_values_follow_the_option_rules(tmp_path, monkeypatch, capsys, line, message):
    conf = tmp_path / "conf"
    shutil.copytree(cli_render._conf_dir() / "render", conf / "render")
    shutil.copy(cli_render._conf_dir() / "render.yaml", conf / "render.yaml")
    key = line.split(":")[0]
    preset = conf / "render" / "disc.yaml"
    text = preset.read_text()
    if key == "person":
        text = text.replace("  work_size: 192", "  work_size: .nan")
    else:
        text = "\n".join(line if ln.startswith(f"{key}:") else ln for ln in text.splitlines()) + "\n"
    preset.write_text(text)
    monkeypatch.setattr(cli_render, "_conf_dir", lambda: conf)
    monkeypatch.setattr("portraitseg.presets.presets_dir", lambda: conf / "render")
    src = tmp_path / "p.png"
    Image.new("RGB", (64, 48)).save(src)
    code = cli_main(["render", str(src), "-o", str(tmp_path / "out"), "--render", "disc"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--render disc (conf/render/disc.yaml)" in err and message in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---------------------------------------------------------------------------------------------
# the Python API's input normaliser (portraitseg.pipeline.stack_images, PortraitPipeline.forward)


@pytest.fixture(scope="module")
def tiny_pipeline():
    import torch

    from portraitseg.models import create_model
    from portraitseg.pipeline import PortraitPipeline, render_preset

    torch.manual_seed(0)
    net = create_model("fcn", "tu-mobilenetv3_small_050", encoder_weights=None, classes=11, person_head=True)
    return PortraitPipeline(net.eval(), render_preset("disc"), model_size=32, face_pass=False).eval()


def _nan_in_second():
    import torch

    bad = torch.rand(1, 3, 16, 16)
    bad[0, 1, 3, 4] = float("nan")
    return [torch.rand(3, 16, 16), bad]


def _bad_inputs():
    import torch

    inf = torch.rand(2, 3, 16, 16)
    inf[1, 0, 0, 0] = float("inf")
    return [
        ("nan", _nan_in_second(), r"image #1 has NaN or infinite pixels.*nan_to_num"),
        ("inf", inf, r"image #1 has NaN or infinite pixels"),
        ("0-255 floats", torch.rand(1, 3, 16, 16) * 255, r"image #0 has values in \[.*\]; float images "
         r"must be in \[0, 1\]: divide 0-255 values by 255"),
        ("negative", torch.rand(1, 3, 16, 16) - 0.5, r"image #0 has values in \[-"),
        ("empty batch", torch.zeros(0, 3, 16, 16), r"no images given \(an empty batch\)"),
        ("empty list", [], r"no images given"),
        ("zero height", torch.zeros(1, 3, 0, 16), r"16x0 pixels: a photo needs at least 1x1"),
        ("rgba tensor", torch.rand(1, 4, 16, 16), r"4 channels \(RGBA\).*images\[:, :3\]"),
        ("rgba numpy", np.zeros((16, 16, 4), np.uint8), r"4 channels \(RGBA\).*array\[\.\.\., :3\]"),
        ("2 channels", torch.rand(1, 2, 16, 16), r"has 2 channels.*\(B, 3, H, W\) RGB"),
        ("HWC tensor", torch.rand(16, 16, 3), r"channels last\? .*permute\(0, 3, 1, 2\)"),
        ("5-D", torch.rand(1, 1, 3, 16, 16), r"expected \(B, 3, H, W\) or \(3, H, W\), got shape"),
        ("CHW numpy", np.zeros((3, 16, 16), np.float32), r"numpy array is read as a photo \(H, W, 3\).*"
         r"torch.from_numpy"),
        ("int64", torch.zeros(1, 3, 16, 16, dtype=torch.int64), r"dtype torch.int64 is not a pixel type"),
        ("bool numpy", np.zeros((16, 16, 3), bool), r"dtype torch.bool is not a pixel type"),
        ("object numpy", np.empty((16, 16, 3), object), r"numpy dtype object is not an image type"),
        ("a path", "photo.jpg", r"got str \(a file: read it first, portraitseg.io.read_image"),
        ("mixed sizes", [torch.rand(3, 16, 16), torch.rand(1, 3, 16, 20)], r"mixed sizes.*#1 16x20"),
    ]


@pytest.mark.parametrize(("case", "images", "message"), _bad_inputs(), ids=[c[0] for c in _bad_inputs()])
def test_pipeline_names_each_bad_input_and_the_fix(tiny_pipeline, case, images, message):
    from portraitseg.pipeline import PipelineError

    with pytest.raises(PipelineError, match=message):
        tiny_pipeline(images)


def test_pipeline_takes_photos_as_numpy_gray_uint16_and_lists_of_batches(tiny_pipeline):
    """Every accepted form gives the portrait of the same photo as a float (B, 3, H, W) tensor."""
    import torch

    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (2, 24, 32, 3), dtype=np.uint8)  # how photos are held in numpy
    ref = tiny_pipeline(torch.from_numpy(hwc).permute(0, 3, 1, 2).float() / 255).portrait
    forms = {
        "uint8 BHWC": hwc,
        "float64 BHWC": hwc / 255.0,
        "list of HWC": [hwc[0], hwc[1]],
        "BGR flip back (negative strides)": hwc[..., ::-1].copy()[..., ::-1],
        "read-only array": np.asarray(hwc).copy().view(),
        "list of a batch and a photo": [torch.from_numpy(hwc[:1]).permute(0, 3, 1, 2).contiguous(),
                                        torch.from_numpy(hwc[1]).permute(2, 0, 1)],
        "uint16": hwc.astype(np.uint16) * 257,
    }
    forms["read-only array"].flags.writeable = False
    for name, images in forms.items():
        out = tiny_pipeline(images).portrait
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0, msg=name)
    gray = hwc[0, ..., 0]
    as_rgb = tiny_pipeline(np.repeat(gray[..., None], 3, axis=-1)).portrait
    torch.testing.assert_close(tiny_pipeline(gray).portrait, as_rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny_pipeline(torch.from_numpy(gray)[None, None]).portrait, as_rgb,
                               atol=1e-5, rtol=0)
    before = hwc.copy()
    tiny_pipeline(hwc.astype(np.float32) / 255)  # a caller's float array is never written into
    assert np.array_equal(hwc, before)


def test_pipeline_refuses_photos_over_its_pixel_limit_before_converting(tiny_pipeline):
    import torch

    from portraitseg.config import DEFAULT_MAX_PIXELS
    from portraitseg.pipeline import PipelineError, PortraitPipeline

    assert tiny_pipeline.max_pixels == DEFAULT_MAX_PIXELS
    # an expanded view: 20000x20000 pixels that take 3 bytes of memory, refused before any copy
    huge = torch.zeros(1, 3, 1, 1, dtype=torch.uint8).expand(1, 3, 20000, 20000)
    with pytest.raises(PipelineError, match=r"images are 20000x20000 = 400,000,000 pixels, over the limit "
                       r"of max_pixels=50,000,000; downscale them, or raise the limit with "
                       r"PortraitPipeline\(\.\.\., max_pixels=N\)"):
        tiny_pipeline(huge)
    small = PortraitPipeline(tiny_pipeline.segmenter, tiny_pipeline.renderer, model_size=32,
                             face_pass=False, max_pixels=32 * 32)
    assert small(torch.rand(1, 3, 32, 32)).portrait.shape == (1, 3, 32, 32)
    with pytest.raises(PipelineError, match=r"32x33 = 1,056 pixels, over the limit of max_pixels=1,024"):
        small(torch.rand(1, 3, 33, 32))
    for bad in (0, -5, 2.5, True, "big"):
        with pytest.raises((PipelineError, ValueError), match="max_pixels"):
            PortraitPipeline(tiny_pipeline.segmenter, tiny_pipeline.renderer, max_pixels=bad)


def test_one_pixel_limit_for_data_render_and_the_api():
    import portraitseg.io
    import portraitseg.pipeline
    from portraitseg.config import DEFAULT_MAX_PIXELS, DEFAULT_MODEL_SIZE
    from portraitseg.data.datamodule import HelenDataModule

    conf = cli_render._conf_dir()
    assert cli_render.DEFAULT_MAX_PIXELS is DEFAULT_MAX_PIXELS is portraitseg.io.DEFAULT_MAX_PIXELS
    assert cli_render.DEFAULT_MODEL_SIZE is DEFAULT_MODEL_SIZE is portraitseg.pipeline.DEFAULT_MODEL_SIZE
    assert HelenDataModule(root=".").hparams.max_pixels == DEFAULT_MAX_PIXELS
    for yaml in sorted((conf / "data").glob("*.yaml")):  # the data configs spell the value out
        for line in yaml.read_text().splitlines():
            if line.startswith("max_pixels:"):
                assert int(line.split(":")[1]) == DEFAULT_MAX_PIXELS, yaml
