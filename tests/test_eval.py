"""eval.py end to end on a tiny trained checkpoint: metrics.json, figures, native resolution, TTA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from conftest import TINY
from portraitseg.classes import CLASS_NAMES
from portraitseg.cli import config_dir
from portraitseg.cli.checks import ConfigError
from portraitseg.cli.eval import EvalConfigError, evaluate
from portraitseg.cli.train import train
from portraitseg.io import InputError
from portraitseg.models.checkpoint import export_weights

REPO = Path(__file__).resolve().parents[1]
DATA = ["data=synthetic", "data.synthetic.n=10", "data.synthetic.size=64", "data.batch_size=2"]
TRAIN = [*TINY, *DATA]  # the tiny run of conftest on the evaluated data
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def ckpt(root) -> Path:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[*TRAIN, f"paths.root_dir={root}",
                                          f"paths.output_dir={root / 'train'}"])
    train(cfg)
    return root / "train" / "checkpoints" / "last.ckpt"


def eval_config(root: Path, out: str, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("eval", overrides=[*DATA, *QUIET, f"paths.root_dir={root}",
                                          f"paths.output_dir={root / out}", *overrides])


def test_eval_writes_metrics_and_figures(root, ckpt, capsys):
    # a smaller network input than the 64 px labels: scores must still be at label resolution
    result = evaluate(eval_config(root, "e1", f"ckpt_path={ckpt}", "data.image_size=48",
                                  "num_figures=3"))
    out = root / "e1"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["num_images"] == 2 and saved["tta_flip"] is False
    assert saved["checkpoint"] == str(ckpt) and saved["class_names"] == list(CLASS_NAMES)
    confusion = np.asarray(saved["confusion"])
    assert confusion.shape == (11, 11)
    assert confusion.sum() == 2 * 64 * 64, "scored at the native label size, not at 48 px"
    scores = saved["scores"]
    for key in ("f1_overall", "miou", "pixel_acc", "subject_iou", "f1_brows", "f1/hair"):
        assert key in scores
    assert scores["pixel_acc"] == pytest.approx(np.trace(confusion) / confusion.sum())
    assert result["scores"]["f1_overall"] == pytest.approx(scores["f1_overall"])
    with Image.open(out / "confusion.png") as im:
        assert im.width > 300
    with Image.open(out / "predictions.png") as im:
        assert im.size == (4 * 48, 2 * 48)  # 2 test images (< num_figures): image|truth|prediction|portrait
    printed = capsys.readouterr().out
    assert "overall F1" in printed and "inner_mouth" in printed and "subject IoU" in printed


def test_eval_with_flip_tta_and_an_export(root, ckpt):
    weights = export_weights(ckpt, root / "model.pt")
    plain = evaluate(eval_config(root, "e2", f"ckpt_path={weights}", "data.image_size=64",
                                 "num_figures=0"))
    tta = evaluate(eval_config(root, "e3", f"ckpt_path={weights}", "data.image_size=64",
                               "tta_flip=true", "num_figures=0", "split=val"))
    assert tta["tta_flip"] is True and tta["split"] == "val"
    assert json.loads((root / "e3" / "metrics.json").read_text())["tta_flip"] is True
    assert not (root / "e2" / "predictions.png").exists()
    assert plain["model"] == tta["model"]


def test_eval_needs_a_checkpoint(root):
    with pytest.raises(EvalConfigError, match=r"ckpt_path=<file>.*python train.py"):
        evaluate(eval_config(root, "e4"))


def test_eval_refuses_foreign_files_and_unknown_splits(root, ckpt):
    foreign = root / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(InputError, match="bare state dict"):
        evaluate(eval_config(root, "e5", f"ckpt_path={foreign}"))
    with pytest.raises(ConfigError, match=r"^split=dev: must be one of test, val, train; pass e\.g\. split="):
        evaluate(eval_config(root, "e6", f"ckpt_path={ckpt}", "split=dev"))


def run_eval_py(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(REPO / "eval.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_eval_py_command_line(root, ckpt):
    done = run_eval_py(f"ckpt_path={ckpt}", *DATA, *QUIET, f"paths.root_dir={root}",
                       f"hydra.run.dir={root / 'cli'}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "overall F1" in done.stdout
    assert (root / "cli" / "metrics.json").is_file() and (root / "cli" / "confusion.png").is_file()
    missing = run_eval_py(f"paths.root_dir={root}", f"hydra.run.dir={root / 'cli2'}")
    assert missing.returncode == 2
    assert "eval needs a model: python eval.py ckpt_path=<file>" in missing.stderr
