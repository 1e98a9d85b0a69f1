"""Training through the train.py config tree: a 1-epoch smoke run and resuming from a checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import TINY
from portraitseg.cli import config_dir
from portraitseg.cli.train import train


def train_config(root: Path, run: str, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=[*TINY, f"paths.root_dir={root}",
                                           f"paths.output_dir={root / run}", *overrides])


def test_one_epoch_smoke_run(tmp_path):
    cfg = train_config(tmp_path, "run")
    metrics = train(cfg)
    assert 0.0 <= metrics["val/f1_overall"] <= 1.0
    assert {"val/miou", "val/subject_iou", "val/f1/hair", "train/loss_epoch"} <= set(metrics)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "checkpoints" / "epoch000.ckpt").is_file()
    assert list(run.rglob("images/val_epoch000.png")), "per-epoch prediction grid"
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    assert any(row.get("val/f1_overall") for row in rows)
    # checkpoints are self-describing and load without unpickling arbitrary objects
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["net"]["encoder_name"] == "tu-mobilenetv3_small_050"
    assert ckpt["portraitseg"]["val_metrics"]["f1_overall"] == pytest.approx(metrics["val/f1_overall"])
    assert type(ckpt["datamodule_hyper_parameters"]["augment"]) is dict


def test_resume_restores_epoch_step_optimizer_and_scheduler(tmp_path):
    train(train_config(tmp_path, "first"))
    first = torch.load(tmp_path / "first" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (first["epoch"], first["global_step"]) == (0, 2)

    resume = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(train_config(tmp_path, "second", "trainer.max_epochs=2", f"ckpt_path={resume}"))
    second = torch.load(tmp_path / "second" / "checkpoints" / "last.ckpt", weights_only=True)
    # one more epoch of 2 steps on top of the restored ones (a fresh start would say 0 and 2)
    assert (second["epoch"], second["global_step"]) == (1, 4)
    adam = second["optimizer_states"][0]["state"]
    assert {int(s["step"]) for s in adam.values()} == {4}, "Adam moments continue from step 2"
    assert second["lr_schedulers"][0]["last_epoch"] == 4
    assert first["lr_schedulers"][0]["last_epoch"] == 2


def test_init_from_loads_weights_but_starts_fresh(tmp_path):
    from portraitseg.cli.train import build_module, init_weights

    train(train_config(tmp_path, "first"))
    source = tmp_path / "first" / "checkpoints" / "last.ckpt"
    cfg = train_config(tmp_path, "second", f"init_from={source}")
    module = build_module(cfg)
    init_weights(module, str(source))
    stored = torch.load(source, weights_only=True)["state_dict"]
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(tensor, stored[name], msg=name)
    train(cfg)  # a fresh run: epoch and step restart from zero
    second = torch.load(tmp_path / "second" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (second["epoch"], second["global_step"]) == (0, 2)


def test_init_from_another_architecture_is_refused(tmp_path):
    from portraitseg.cli.train import build_module, init_weights

    train(train_config(tmp_path, "first"))
    cfg = train_config(tmp_path, "other", "model.skip=true")  # FCN-16s: an extra skip layer
    with pytest.raises(ValueError, match="does not match the configured model"):
        init_weights(build_module(cfg), str(tmp_path / "first" / "checkpoints" / "last.ckpt"))
