"""The TorchScript inference artifact: same outputs as the full model, loaded with PyTorch alone,
and a warned fall-back to the full model when it is damaged, stale or of another version."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from conftest import tiny_checkpoint
from portraitseg.models import inference as inf
from portraitseg.models.checkpoint import DEFAULT_MODEL, load_segmenter


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A small two-output model as a Lightning-style checkpoint (64 px training size)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.ckpt", arch="fpn", person_head=True)


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, *sizes: tuple[int, int]) -> None:
    for h, w in sizes:
        x = torch.rand(2, 3, h, w)
        with torch.inference_mode():
            for u, v in zip(a.segment(x), b.segment(x), strict=True):
                torch.testing.assert_close(u, v, atol=1e-5, rtol=0)


def test_artifact_reproduces_the_model_at_any_size(weights, tmp_path):
    path = inf.write_artifact(weights, tmp_path / "tiny.ts")
    traced, info = inf.read_artifact(path, weights)
    full, full_info = load_segmenter(weights)
    assert isinstance(traced.net, inf.TracedNet)
    assert traced.person_head and traced.classes == 11 and traced.stride == full.stride
    assert info["image_size"] == full_info["image_size"] == 64 and info["path"] == str(weights)
    assert info["class_names"] == full_info["class_names"]
    _same_outputs(traced, full, (64, 64), (96, 160), (37, 50))


def test_bundled_artifact_matches_the_bundled_weights():
    if not DEFAULT_MODEL.is_file():
        pytest.skip("no bundled model in this install")
    with warnings.catch_warnings():
        warnings.simplefilter("error", inf.ArtifactWarning)  # stale: rewrite it (see the module)
        traced, _ = inf.load_inference_segmenter(DEFAULT_MODEL)
    assert isinstance(traced.net, inf.TracedNet)
    _same_outputs(traced, load_segmenter(DEFAULT_MODEL)[0], (320, 224))


@pytest.mark.parametrize("damage", ["garbage", "version", "weights"])
def test_unusable_artifact_falls_back_with_a_warning(weights, tmp_path, monkeypatch, damage):
    local = tmp_path / "tiny.ckpt"
    local.write_bytes(weights.read_bytes())
    inf.write_artifact(local)
    if damage == "garbage":
        inf.artifact_path(local).write_bytes(b"not a zip archive")
    elif damage == "version":
        monkeypatch.setattr(inf, "__version__", "0.0.0-other")
    else:
        local.write_bytes(weights.read_bytes() + b"\0")  # another weights file than the one traced
    hint = r"tiny\.ts: not used, .*python -m portraitseg.models.inference"
    with pytest.warns(inf.ArtifactWarning, match=hint):
        net, info = inf.load_inference_segmenter(local)
    assert not isinstance(net.net, inf.TracedNet) and info["image_size"] == 64


def test_artifact_loads_without_smp_or_timm(weights, tmp_path):
    inf.write_artifact(weights)
    code = ("import sys; from portraitseg.models.inference import load_inference_segmenter as load; "
            f"net, _ = load({str(weights)!r}); "
            "heavy = [m for m in ('segmentation_models_pytorch', 'timm', 'lightning', 'hydra') "
            "if m in sys.modules]; "
            "print(type(net.net).__name__, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["TracedNet", "[]"]


def test_write_refuses_the_weights_file_itself(weights):
    from portraitseg.io import InputError

    with pytest.raises(InputError, match="same file"):
        inf.write_artifact(weights, weights)
