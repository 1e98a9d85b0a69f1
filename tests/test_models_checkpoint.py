"""Loading checkpoints safely, refusing foreign files, the fp16 weights export and the default model."""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import TINY
from portraitseg.cli import config_dir
from portraitseg.cli.train import train
from portraitseg.data.synthetic import make_sample
from portraitseg.models import Segmenter, checkpoint, loading, pretrained, registry
from portraitseg.models.checkpoint import (
    FORMAT,
    CheckpointError,
    default_model_path,
    export_weights,
    load_segmenter,
    resolve_model_path,
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """``last.ckpt`` of a 2-step training run through the train.py config tree."""
    root = tmp_path_factory.mktemp("train")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"paths.root_dir={root}",
                                          f"paths.output_dir={root / 'run'}"])
    train(cfg)
    return root / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Four synthetic portraits ``(4, 3, 64, 64)`` in [0, 1]."""
    return torch.stack([torch.from_numpy(make_sample(i, seed=1, size=64).image).permute(2, 0, 1)
                        for i in range(4)]).float() / 255


def test_lightning_checkpoint_loads_with_weights_only(ckpt, images, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model, info = load_segmenter(ckpt)
    assert calls == [True]
    assert isinstance(model, Segmenter) and not model.training
    assert info["kind"] == "lightning" and info["global_step"] == 2 and info["epoch"] == 0
    assert info["model"]["encoder_name"] == "tu-mobilenetv3_small_050"
    assert info["class_names"][10] == "hair" and len(info["class_names"]) == 11
    assert info["image_size"] == 64
    assert "f1_overall" in info["metrics"] and "f1/hair" in info["metrics"]
    # the very weights that were trained
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[f"net.{key}"]), key
    assert model(images).shape == (4, 11, 64, 64)


def test_loading_never_downloads(ckpt, tmp_path, monkeypatch):
    """A model trained from ImageNet weights is rebuilt with encoder_weights=None."""
    obj = torch.load(ckpt, weights_only=True)
    obj["hyper_parameters"]["net"]["encoder_weights"] = "imagenet"
    path = tmp_path / "pretrained.ckpt"
    torch.save(obj, path)

    def no_network(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not look for pretrained weights")

    monkeypatch.setattr(pretrained, "host_reachable", no_network)
    monkeypatch.setattr(registry, "weights_source", no_network)
    seen = []
    real = loading.create_model
    monkeypatch.setattr(loading, "create_model", lambda **kw: seen.append(kw) or real(**kw))
    model, info = load_segmenter(path)
    assert seen[-1]["encoder_weights"] is None
    assert info["model"]["encoder_weights"] == "imagenet"  # reported as trained


def test_export_round_trip(ckpt, images, tmp_path):
    out = export_weights(ckpt, tmp_path / "model.pt")
    assert out.stat().st_size < ckpt.stat().st_size / 3  # fp16, no optimizer state
    raw = torch.load(out, weights_only=True)
    assert raw["format"] == FORMAT and raw["dtype"] == "float16"
    floats = [v for v in raw["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert raw["state_dict"]["net.encoder.model.conv_stem.weight"].dtype == torch.float16
    assert any(not v.is_floating_point() for v in raw["state_dict"].values())  # BN counters kept
    assert raw["source"]["file"] == "last.ckpt" and len(raw["source"]["sha256"]) == 64

    original, info = load_segmenter(ckpt)
    exported, exported_info = load_segmenter(out)
    assert exported_info["kind"] == "export"
    assert all(v.dtype == torch.float32 for v in exported.state_dict().values() if v.is_floating_point())
    for key in ("model", "class_names", "epoch", "global_step", "image_size"):
        assert exported_info[key] == info[key], key
    assert exported_info["metrics"] == pytest.approx(info["metrics"], nan_ok=True)
    with torch.no_grad():
        a, b = original(images), exported(images)
    assert torch.allclose(a, b, atol=2e-2, rtol=1e-2)
    agree = (a.argmax(1) == b.argmax(1)).float().mean()
    assert agree >= 0.999, f"fp16 export changes {100 * (1 - agree):.2f}% of the predictions"


def test_export_can_store_eval_metrics_and_other_dtypes(ckpt, tmp_path):
    out = export_weights(ckpt, tmp_path / "m.pt", dtype=torch.bfloat16, metrics={"f1_overall": 0.9})
    raw = torch.load(out, weights_only=True)
    assert raw["dtype"] == "bfloat16" and raw["metrics"] == {"f1_overall": 0.9}
    with pytest.raises(ValueError, match="floating"):
        export_weights(ckpt, tmp_path / "x.pt", dtype=torch.int8)


def test_export_cli_writes_weights_and_card(ckpt, tmp_path, capsys):
    assert checkpoint.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "m.pt"),
                            "--card", str(tmp_path / "MODEL_CARD.md")]) == 0
    card = (tmp_path / "MODEL_CARD.md").read_text()
    assert "f1_overall" in card and "tu-mobilenetv3_small_050" in card and "neck" in card
    # metrics.json of eval.py (NaN written as null) replaces the checkpoint's val scores
    (tmp_path / "metrics.json").write_text('{"scores": {"f1_overall": 0.75, "f1/inner_mouth": null}}')
    assert checkpoint.main(["--ckpt", str(ckpt), "--out", str(tmp_path / "e.pt"),
                            "--metrics", str(tmp_path / "metrics.json")]) == 0
    _, info = load_segmenter(tmp_path / "e.pt")
    assert info["metrics"]["f1_overall"] == 0.75 and math.isnan(info["metrics"]["f1/inner_mouth"])
    assert "wrote" in capsys.readouterr().out
    assert checkpoint.main(["--ckpt", str(tmp_path / "missing.ckpt"), "--out", "x.pt"]) == 2
    assert "no such model file" in capsys.readouterr().err


class Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def refused(path: Path, *fragments: str) -> None:
    with pytest.raises(CheckpointError) as err:
        load_segmenter(path)
    message = str(err.value)
    assert str(path) in message and "python train.py" in message and "export" in message
    for fragment in fragments:
        assert fragment in message, message


def test_refuses_pickled_objects(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6", "x": Payload()}, path)
    refused(path, "builtins.print", "arbitrary code", "weights_only=True")
    assert "code ran" not in capsys.readouterr().out


def test_refuses_raw_pickle_and_other_files(tmp_path):
    raw = tmp_path / "model.pkl"
    raw.write_bytes(pickle.dumps({"state_dict": {}}))
    refused(raw, "not a PyTorch file")
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    refused(text, "not a PyTorch file")
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", "b")
    refused(archive, "zip archive that torch cannot read")


def test_refuses_foreign_torch_files(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), bare)
    refused(bare, "bare state dict", "model config")
    other = tmp_path / "other.pt"
    torch.save({"epoch": 3, "model": {}}, other)
    refused(other, "keys [epoch, model]")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    refused(tensor, "holds a Tensor")
    foreign_module = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6",
                "hyper_parameters": {"lr": 0.1}}, foreign_module)
    refused(foreign_module, "not of portraitseg's SegmentationModule")


def test_refuses_configs_naming_other_constructors(ckpt, tmp_path):
    obj = torch.load(ckpt, weights_only=True)
    obj["hyper_parameters"]["net"]["_target_"] = "os.system"
    path = tmp_path / "target.ckpt"
    torch.save(obj, path)
    refused(path, "'os.system'", "portraitseg.models.create_model")


def test_refuses_weights_that_do_not_fit(ckpt, tmp_path):
    obj = torch.load(ckpt, weights_only=True)
    obj["hyper_parameters"]["net"]["classes"] = 5
    path = tmp_path / "classes.ckpt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_segmenter(path)


def test_refuses_newer_export_versions(ckpt, tmp_path):
    out = export_weights(ckpt, tmp_path / "m.pt")
    obj = torch.load(out, weights_only=True)
    obj["version"] = 99
    torch.save(obj, out)
    refused(out, "version 99")


def test_missing_file_names_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="python train.py"):
        load_segmenter(tmp_path / "nope.ckpt")


def test_checkpoints_with_omegaconf_datamodule_hparams_still_load(ckpt, tmp_path):
    """Files written before the module made hyperparameters plain (OmegaConf containers inside)."""
    obj = torch.load(ckpt, weights_only=True)
    obj["datamodule_hyper_parameters"] = {
        "augment": OmegaConf.create({"scale": [0.75, 1.25], "flip": 0.5}), "image_size": 64}
    del obj["portraitseg"]
    path = tmp_path / "old.ckpt"
    torch.save(obj, path)
    with pytest.raises(Exception, match="omegaconf"):
        torch.load(path, weights_only=True)
    model, info = load_segmenter(path)
    assert isinstance(model, Segmenter)
    assert set(info["metrics"]) == {"f1_overall"}  # from ModelCheckpoint's state


def test_default_model_absent_and_present(monkeypatch, tmp_path, ckpt):
    missing = tmp_path / "weights" / "default.pt"
    monkeypatch.setattr(checkpoint, "DEFAULT_MODEL", missing)
    assert default_model_path() is None
    with pytest.raises(FileNotFoundError) as err:
        resolve_model_path(None)
    assert str(missing) in str(err.value) and "last.ckpt" in str(err.value)
    assert resolve_model_path("some.ckpt") == Path("some.ckpt")

    export_weights(ckpt, missing)
    assert default_model_path() == missing
    assert resolve_model_path("default") == missing
    model, info = load_segmenter(resolve_model_path(None))
    assert info["kind"] == "export"


def test_bundled_default_model_if_installed():
    path = default_model_path()
    if path is None:
        pytest.skip(f"no bundled model at {checkpoint.DEFAULT_MODEL} (produced after the Helen run)")
    assert path.stat().st_size <= 20e6
    assert (path.parent / "MODEL_CARD.md").is_file()
    model, info = load_segmenter(path)
    assert info["kind"] == "export" and len(info["class_names"]) == model.classes
    with torch.no_grad():
        assert model(torch.rand(1, 3, 96, 80)).shape == (1, model.classes, 96, 80)
