"""The face finder (portraitseg.subject.faces) and its place in PortraitPipeline pass 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from portraitseg.classes import NUM_CLASSES
from portraitseg.data.synthetic import make_sample
from portraitseg.pipeline import PipelineError, PortraitPipeline, frame_faces, render_preset
from portraitseg.subject.faces import MTCNN, THRESHOLDS, FaceFinder, calibrate_boxes, find_faces

skimage_data = pytest.importorskip("skimage.data")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN()


def scene(name: str, h: int = 384, w: int = 512) -> np.ndarray:
    """A people-free scikit-image picture, tiled/cropped to ``(h, w, 3)`` uint8."""
    img = getattr(skimage_data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, 2)
    reps = (-(-h // img.shape[0]), -(-w // img.shape[1]), 1)
    return np.ascontiguousarray(np.tile(img[..., :3], reps)[:h, :w])


def two_faces() -> tuple[torch.Tensor, np.ndarray]:
    """Two synthetic portraits (128 px) pasted with their alpha into brick: ``(photo (1, 3, H, W),
    face boxes (2, 4))``, a face box being the extent of the label's skin + facial features."""
    photo = scene("brick").astype(np.float32)
    boxes = []
    for index, (top, left) in ((0, (40, 30)), (2, (200, 330))):
        sample = make_sample(index, 0, 128)
        alpha = sample.foreground[..., 3:].astype(np.float32) / 255
        region = photo[top : top + 128, left : left + 128]
        photo[top : top + 128, left : left + 128] = alpha * sample.image + (1 - alpha) * region
        ys, xs = np.nonzero((sample.label >= 1) & (sample.label <= 9))
        boxes.append([left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1])
    image = torch.from_numpy(photo.round().astype(np.uint8)).permute(2, 0, 1)[None].float() / 255
    return image, np.array(boxes, np.float64)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.clip(rb - lt, 0, None).prod()
    return float(inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter))


def test_two_faces_found_where_they_are(detector):
    image, truth = two_faces()
    boxes, scores, used = find_faces(image, detector, max_faces=4)
    assert boxes.shape == (1, 4, 4) and scores.shape == used.shape == (1, 4)
    assert used[0].tolist() == [True, True, False, False]
    assert (scores[0, :2] >= THRESHOLDS[2]).all() and (scores[0, 2:] == 0).all()
    found = boxes[0, :2].numpy()
    for face in truth:
        assert max(box_iou(face, f) for f in found) >= 0.5, (face, found)


@pytest.mark.parametrize("name", ["brick", "gravel", "grass", "coffee", "chelsea"])
def test_no_faces_on_people_free_photos(detector, name):
    image = torch.from_numpy(scene(name, 512, 768)).permute(2, 0, 1)[None].float() / 255
    _, scores, used = find_faces(image, detector, max_faces=4)
    assert not used.any(), scores


def test_batched_detection_equals_one_photo_at_a_time(detector):
    image, _ = two_faces()
    empty = torch.from_numpy(scene("grass")).permute(2, 0, 1)[None].float() / 255
    both = detector(torch.cat([image, empty]))
    alone = detector(image)
    assert len(both) == 2 and len(both[1]) == 0
    torch.testing.assert_close(both[0], alone[0])


def test_faces_below_min_face_are_not_searched():
    image, truth = two_faces()  # faces ~50 px wide
    small = MTCNN(min_face=24)
    assert small.scales(384, 512)[0] == pytest.approx(0.5)
    large = MTCNN(min_face=4 * (truth[:, 2] - truth[:, 0]).max())
    assert not find_faces(image, large, 4)[2].any()
    with pytest.raises(ValueError, match="min_face"):
        MTCNN(min_face=8)


def test_calibration_and_framing_geometry():
    boxes = torch.tensor([[[10.0, 20, 110, 220]]])
    torch.testing.assert_close(calibrate_boxes(boxes, (0.1, -0.05, 2.0, 1.0)),
                               torch.tensor([[[-30.0, 10, 170, 210]]]))
    squares, gain = frame_faces(boxes, (1000, 1000), (100, 100), face_size=256, framing=(1.5, 0.0, 0.1))
    # long side 200 -> a 300 px square, centred 20 px below the box's centre (60, 120)
    torch.testing.assert_close(squares, torch.tensor([[[-90.0, -10, 210, 290]]]))
    assert gain.tolist() == [[True]]  # 30 pass-1 pixels: pass 2 gains resolution
    _, gain = frame_faces(boxes, (1000, 1000), (1000, 1000), face_size=256, framing=(1.5, 0.0, 0.1))
    assert gain.tolist() == [[False]]  # 300 pass-1 pixels: nothing to gain at 256 px


class Recorder(torch.nn.Module):
    """A Helen parser answering 'background' everywhere, recording the input of every call."""

    classes, person_head = NUM_CLASSES, False

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[int, ...]] = []

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(image.shape))
        logits = torch.zeros(image.shape[0], NUM_CLASSES, *image.shape[-2:]) + self.weight
        logits[:, 0] = 5.0
        return logits


def test_pipeline_parses_the_found_faces_at_face_size():
    image, truth = two_faces()
    net = Recorder()
    assert PortraitPipeline(net, render_preset("disc"), model_size=64).face_size == 64  # the default
    pipe = PortraitPipeline(net, render_preset("disc"), model_size=64, face_size=256, subject="face").eval()
    assert pipe.faces == "mtcnn" and isinstance(pipe.face_finder, FaceFinder)
    out = pipe(image)
    assert net.calls == [(1, 3, 64, 64), (2, 3, 256, 256)]  # pass 1, then both face crops at once
    assert out.face_used[0].tolist() == [True, True] + [False] * 6
    for face in truth:  # each face box lies inside one of the parsed square crops
        assert any(s[0] <= face[0] and s[1] <= face[1] and s[2] >= face[2] and s[3] >= face[3]
                   and abs((s[2] - s[0]) - (s[3] - s[1])) < 1e-3 for s in out.faces[0, :2].tolist())


def test_pipeline_without_faces_and_with_the_parse_finder():
    empty = torch.from_numpy(scene("gravel")).permute(2, 0, 1)[None].float() / 255
    net = Recorder()
    out = PortraitPipeline(net, render_preset("disc"), model_size=64, subject="face")(empty)
    assert not out.face_used.any() and net.calls == [(1, 3, 64, 64)]  # no pass 2
    image, _ = two_faces()
    heads = Recorder()
    pipe = PortraitPipeline(heads, render_preset("disc"), model_size=64, subject="face", faces="parse")
    assert pipe.face_finder is None
    assert not pipe(image).face_used.any()  # the all-background parse has no heads


@pytest.mark.parametrize("options, match", [
    ({"faces": "haar"}, "faces='haar'"), ({"min_face": 8}, "min_face=8"),
    ({"min_face": True}, "min_face=True"),
])
def test_pipeline_face_options_are_checked(options, match):
    with pytest.raises(PipelineError, match=match):
        PortraitPipeline(Recorder(), render_preset("disc"), **options)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "helenstar").is_dir() or not (SHARED / "ccp_person").is_dir(),
                    reason=f"HELEN* and CCP not found under {SHARED}")
def test_benchmark_quick_setting(tmp_path):
    out = tmp_path / "quick.json"
    subprocess.run([sys.executable, str(REPO / "experiments" / "face_finding" / "bench.py"), "--quick",
                    "--threads", "1", "--out", str(out)], check=True, capture_output=True, timeout=900)
    result = json.loads(out.read_text())
    assert result["quick"] and result["photos"] == 2
    mtcnn = result["arms"]["mtcnn"]
    assert sum(mtcnn["faces_by_bin"]) == 4 and mtcnn["false_per_mp_people_free"] == 0
    assert mtcnn["recall_48_up"] == 1.0
    assert result["parse_f1"]["mtcnn_all"] > result["parse_f1"]["parse_all"]
