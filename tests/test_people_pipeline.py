"""Who stays sharp, end to end: the bundled model on a photo made of two CCP people side by side
(``pipeline(images, focus=...)``, ``people="all"``, ``portraitseg render --focus / --all-people``)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from portraitseg.cli.main import main
from portraitseg.io import read_image, read_label
from portraitseg.pipeline import PipelineError, PortraitPipeline

CCP = Path(os.environ.get("PORTRAITSEG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CCP = CCP / "ccp_person"
H, W = 360, 480
#: two CCP photos with one standing person each
IDS = ("0005", "0009")


def person(stem: str, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A CCP person cut out by its mask, scaled to ``height`` pixels."""
    rgb, mask = read_image(CCP / "images" / f"{stem}.jpg"), read_label(CCP / "masks" / f"{stem}.png") > 0
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    rgb, mask = rgb[box], mask[box]
    width = round(rgb.shape[1] * height / rgb.shape[0])
    return (cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA),
            cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, list[np.ndarray]]:
    """``(photo (H, W, 3) uint8, [left mask, right mask])``: two people side by side on a grey wall."""
    if not (CCP / "images").is_dir():
        pytest.skip(f"CCP person photos not found at {CCP} (set PORTRAITSEG_SHARED_DATA)")
    canvas = np.empty((H, W, 3), np.uint8)
    canvas[:] = (128, 138, 150)
    masks = []
    for stem, centre in zip(IDS, (0.3, 0.7), strict=True):
        rgb, mask = person(stem, int(0.9 * H))
        full = np.zeros((H, W), bool)
        x0 = int(centre * W - rgb.shape[1] / 2)
        full[H - rgb.shape[0]:, x0:x0 + rgb.shape[1]] = mask
        canvas[full] = rgb[mask]
        masks.append(full)
    return canvas, masks


@pytest.fixture(scope="module")
def pipe() -> PortraitPipeline:
    return PortraitPipeline.from_pretrained("default", device="cpu")


def centre(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return int(xs[k]), int(ys[k])


def means(alpha: torch.Tensor | np.ndarray, masks: list[np.ndarray]) -> list[float]:
    a = alpha[0, 0].numpy() if isinstance(alpha, torch.Tensor) else alpha
    return [float(a[m].mean()) for m in masks]


def test_a_click_keeps_that_person_and_blurs_the_other(pipe, pair):
    photo, masks = pair
    both = means(pipe(photo).alpha, masks)
    assert min(both) > 0.8, both  # the default keeps two people of one size
    for k, mask in enumerate(masks):
        out = pipe(photo, focus=centre(mask))
        kept = means(out.alpha, masks)
        assert kept[k] > 0.8 and kept[1 - k] < 0.1, (k, kept)
        assert out.notes == []
    x, y = centre(masks[1])
    fractions = pipe(photo, focus=(x / W, y / H))  # the same click as fractions
    assert means(fractions.alpha, masks)[0] < 0.1


def test_a_click_on_the_wall_keeps_the_default_with_a_note(pipe, pair):
    photo, masks = pair
    out = pipe(photo, focus=(W // 2, 5))
    assert any("no person at" in note for note in out.notes), out.notes
    assert min(means(out.alpha, masks)) > 0.8


def test_all_people_and_bad_focus(pair):
    photo, masks = pair
    everyone = PortraitPipeline.from_pretrained("default", device="cpu", people="all")
    assert min(means(everyone(photo).alpha, masks)) > 0.8
    with pytest.raises(PipelineError, match="people='some'"):
        PortraitPipeline.from_pretrained("default", device="cpu", people="some")
    with pytest.raises(PipelineError, match="one point for a batch of 2"):
        everyone(np.stack([photo, photo]), focus=(3, 4))


def test_render_focus_and_all_people_on_the_command_line(pair, tmp_path, capsys):
    photo, masks = pair
    src = tmp_path / "pair.png"
    Image.fromarray(photo).save(src)
    x, y = centre(masks[0])
    assert main(["render", str(src), "-o", str(tmp_path / "a"), "--focus", f"{x},{y}", "--save-alpha",
                 "-q"]) == 0
    alpha = np.asarray(Image.open(tmp_path / "a" / "pair_alpha.png"), np.float32) / 255
    kept = means(alpha, masks)
    assert kept[0] > 0.8 and kept[1] < 0.1, kept
    assert main(["render", str(src), "-o", str(tmp_path / "b"), "--focus", "0.5,0.02", "--all-people",
                 "--save-alpha", "-q"]) == 0
    assert "no person at 240,7.2" in capsys.readouterr().err
    alpha = np.asarray(Image.open(tmp_path / "b" / "pair_alpha.png"), np.float32) / 255
    assert min(means(alpha, masks)) > 0.8
    with pytest.raises(SystemExit) as stop:
        main(["render", str(src), "--focus", "2.5,1"])
    assert stop.value.code == 2
    assert "--focus" in capsys.readouterr().err


def test_a_clip_keeps_the_person_at_the_focus_in_every_frame(pipe, pair, tmp_path):
    """``render_clip(focus=...)``: the clicked person stays sharp and the other is blurred, in every
    frame of a clip (the same choice of people as for a photo, made frame by frame)."""
    import av

    from conftest import make_clip
    from portraitseg.video.run import render_clip

    photo, masks = pair
    src = make_clip(tmp_path / "pair.mp4", [photo] * 4, audio=False)
    one_pass = pipe.with_options(face_pass=False)  # as clips are segmented by default
    result = render_clip(one_pass, src, tmp_path / "out.mp4", focus=centre(masks[1]))
    with av.open(str(result.path)) as clip:
        frames = [f.to_ndarray(format="rgb24").astype(np.float32) for f in clip.decode(video=0)]
    assert len(frames) == 4
    for frame in frames:
        change = [float(np.abs(frame - photo)[m].mean()) for m in masks]
        assert change[0] > 3 * change[1], change  # the left person blurred, the right one kept
