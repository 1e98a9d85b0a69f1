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
    items, missing, _ = cli_render.expand_inputs([str(images)])
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
    src = tmp_path / "p.png"
    Image.new("RGB", (64, 48)).save(src)
    code = cli_main(["render", str(src), "-o", str(tmp_path / "out"), "--render", "disc"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--render disc (conf/render/disc.yaml)" in err and message in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
