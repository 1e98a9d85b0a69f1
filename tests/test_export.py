"""ONNX export: onnxruntime vs PyTorch parity, dynamic sizes, the CLI, the numpy-only portrait path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_NET, tiny_checkpoint
from portraitseg.cli.export import DEFAULT_OPSET, PARITY_ATOL, export_onnx, parity
from portraitseg.cli.main import main as cli_main
from portraitseg.models import create_model
from portraitseg.models.checkpoint import default_model_path, load_segmenter

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

HELEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "helenstar"


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    model = create_model(**{k: v for k, v in TINY_NET.items() if k != "_target_"}).eval()
    # random BatchNorm statistics, so normalization layers matter in the comparison
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def checkpoint(segmenter, tmp_path_factory):
    """A minimal Lightning checkpoint of SegmentationModule holding ``segmenter``."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.ckpt", net=segmenter)


@pytest.fixture(scope="module")
def onnx_file(segmenter, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(segmenter, path, image_size=(64, 64),
                       metadata={"portraitseg.image_size": "64",
                                 "portraitseg.class_names": json.dumps([str(i) for i in range(11)])})


def _real_photo() -> np.ndarray:
    """A real face photo: a HELEN* image if the shared data is here, else skimage's astronaut."""
    images = sorted((HELEN / "train" / "images").glob("*.jpg"))[:1] if HELEN.is_dir() else []
    if images:
        from portraitseg.io import read_image

        return read_image(images[0])
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


@pytest.mark.parametrize("shape", [(1, 64, 64), (2, 100, 77), (1, 33, 250), (3, 32, 32), (1, 257, 190)])
def test_parity_random_inputs_any_size(segmenter, onnx_file, shape):
    b, h, w = shape
    x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    assert parity(segmenter, onnx_file, [x]) <= PARITY_ATOL


@pytest.mark.parametrize("long_side", [256, 300])
def test_parity_real_photo(segmenter, onnx_file, long_side):
    import cv2

    rgb = _real_photo()
    scale = long_side / max(rgb.shape[:2])
    small = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                       interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
    assert parity(segmenter, onnx_file, [x]) <= PARITY_ATOL


def test_graph_has_dynamic_axes_opset_and_metadata(onnx_file):
    model = onnx.load(str(onnx_file))
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == DEFAULT_OPSET
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert out_dims == ["batch", 11, "height", "width"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["portraitseg.stride"] == "32" and meta["portraitseg.classes"] == "11"


def test_export_rejects_bad_opset_and_tiny_size(segmenter, tmp_path):
    with pytest.raises(ValueError, match="opset 9 not supported"):
        export_onnx(segmenter, tmp_path / "m.onnx", opset=9)
    with pytest.raises(ValueError, match="must be >= the model stride 32"):
        export_onnx(segmenter, tmp_path / "m.onnx", image_size=(16, 64))
    assert not list(tmp_path.iterdir()), "a failed export must leave no file"


def test_cli_export_from_checkpoint(checkpoint, segmenter, tmp_path, capsys):
    out = tmp_path / "sub" / "model.onnx"
    assert cli_main(["export", "--ckpt", str(checkpoint), "--onnx", str(out), "--opset", "17",
                     "--image-size", "64", "96"]) == 0
    printed = capsys.readouterr().out
    assert "parity onnxruntime vs PyTorch" in printed and "(ok)" in printed
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["portraitseg.class_names"])[0] == "background"
    assert meta["portraitseg.image_size"] == "64" and meta["portraitseg.source"] == "last.ckpt"
    loaded, _ = load_segmenter(checkpoint)
    x = torch.rand(1, 3, 70, 45)
    assert parity(loaded, out, [x]) <= PARITY_ATOL


def test_cli_export_reports_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert cli_main(["export", "--ckpt", str(bad), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()


def test_renderer_runs_on_onnx_logits(onnx_file):
    from portraitseg.render import render_portrait

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    image = torch.rand(1, 3, 96, 80)
    (logits,) = session.run(["logits"], {"image": image.numpy()})
    out, alpha = render_portrait(image, logits=torch.from_numpy(logits), sigma=3.0)
    assert out.shape == image.shape and alpha.shape == (1, 1, 96, 80)
    assert torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------
# numpy-only path


_NO_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now fails
from portraitseg.onnx_infer import main
sys.exit(main(sys.argv[1:]))
"""


def test_numpy_only_portrait_cli_without_torch(onnx_file, tmp_path):
    from portraitseg.io import write_image

    photo = tmp_path / "photo in.jpg"
    write_image(photo, _real_photo())
    out = tmp_path / "portrait.jpg"
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, str(onnx_file), str(photo), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from portraitseg.io import read_image

    assert read_image(out).shape == read_image(photo).shape


def test_numpy_portrait_keeps_subject_and_blurs_background(onnx_file):
    from portraitseg.onnx_infer import OnnxPortrait, background_blur

    portrait = OnnxPortrait(onnx_file, strength=0.05)
    assert portrait.size == 64 and portrait.keep == tuple(range(1, 11))
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    out = portrait(rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    # the blend itself: alpha 1 keeps pixels, alpha 0 takes the (smoother) blurred background
    image = rgb.astype(np.float32)
    alpha = np.zeros(rgb.shape[:2], np.float32)
    alpha[30:90, 20:70] = 1.0
    bg = background_blur(image, alpha, sigma=6.0)
    assert bg[:, :, 0].std() < image[:, :, 0].std() / 3
    probs = portrait.probabilities(rgb)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert probs.shape == (11, 64, 48)  # letterbox cropped: 120x90 -> 64x48
    with pytest.raises(ValueError, match="keep=.*0..10"):
        OnnxPortrait(onnx_file, keep=[11])
    with pytest.raises(ValueError, match="uint8"):
        portrait(rgb.astype(np.float32))


def test_numpy_path_matches_pytorch_probabilities(segmenter, onnx_file):
    """Same letterbox + segmenter as the PyTorch path: probabilities agree to float precision."""
    from portraitseg.onnx_infer import OnnxPortrait, letterbox

    rgb = _real_photo()
    portrait = OnnxPortrait(onnx_file)
    batch, (h, w) = letterbox(rgb, 64)
    with torch.no_grad():
        ref = torch.softmax(segmenter(torch.from_numpy(batch)), 1)[0, :, :h, :w].numpy()
    np.testing.assert_allclose(portrait.probabilities(rgb), ref, atol=1e-5)


@pytest.mark.skipif(default_model_path() is None, reason="no bundled default model in this checkout")
def test_cli_export_of_the_bundled_default_model(tmp_path, capsys):
    out = tmp_path / "default.onnx"
    assert cli_main(["export", "--ckpt", "default", "--onnx", str(out), "--image-size", "64", "64"]) == 0
    printed = capsys.readouterr().out
    assert "(ok)" in printed
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["portraitseg.source"] == "default.pt"
