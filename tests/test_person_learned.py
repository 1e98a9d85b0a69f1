"""The learned person path end to end: binary person masks in the folder layout -> a 2-class
segmenter trained with train.py (experiment=person) -> person_alpha_from_model / --person-ckpt."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from conftest import TINY_MODEL, TINY_TRAINER, tiny_checkpoint
from portraitseg.classes import CLASS_NAMES, NUM_CLASSES
from portraitseg.cli import config_dir
from portraitseg.cli.train import train
from portraitseg.data.layouts import discover
from portraitseg.data.synthetic import make_sample
from portraitseg.models.checkpoint import CheckpointError
from portraitseg.subject.person_model import load_person_model, person_alpha_from_model

REPO = Path(__file__).resolve().parents[1]
EXPORTER = REPO / "experiments" / "person" / "export_person_masks.py"

#: the tiny run of conftest on the person masks: 2 classes, batch 4, 3 steps
TINY = [*TINY_MODEL, *TINY_TRAINER, "model.classes=2", "data.image_size=64", "data.batch_size=4",
        "data.num_workers=0", "data.persistent_workers=false", "trainer.limit_train_batches=3"]


def _exporter():
    spec = importlib.util.spec_from_file_location("export_person_masks", EXPORTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.export_person_masks


@pytest.fixture(scope="module")
def person_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    """Person masks from the synthetic foreground layers, a 2-class model trained on them."""
    root = tmp_path_factory.mktemp("person")
    data = _exporter()(root / "people", n=16, size=64, seed=0)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=person", f"data.root={data}", *TINY,
                                          f"paths.root_dir={root}", f"paths.output_dir={root / 'run'}"])
    assert cfg.optimized_metric == "val/miou" and cfg.callbacks.model_checkpoint.monitor == "val/miou"
    metrics = train(cfg)
    return root / "run" / "checkpoints" / "last.ckpt", metrics, data


def test_exported_masks_are_the_whole_person(tmp_path):
    data = _exporter()(tmp_path / "people", n=3, size=64, seed=0)
    splits = discover(data)
    assert [len(splits[s]) for s in ("train", "test")] == [2, 1]
    sample = splits["train"][0]
    mask = np.asarray(Image.open(sample.label))
    truth = make_sample(0, seed=0, size=64)
    assert set(np.unique(mask)) == {0, 255}
    assert np.array_equal(mask > 0, truth.alpha > 0.5)
    assert ((mask > 0) & (truth.label == 0)).sum() > 0.1 * mask.size, "neck and clothes are person"


def test_training_a_person_model_monitors_miou(person_ckpt):
    ckpt, metrics, _ = person_ckpt
    assert ckpt.is_file()
    assert 0.0 <= metrics["val/miou"] <= 1.0 and "val/subject_iou" in metrics
    assert "val/f1_overall" not in metrics
    model, info = load_person_model(ckpt)
    assert info["class_names"] == ["class0", "class1"] and info["model"]["classes"] == 2
    assert not model.training


def test_person_alpha_from_model_end_to_end(person_ckpt):
    ckpt, _, _ = person_ckpt
    model, info = load_person_model(ckpt)
    s = make_sample(20, seed=0, size=(96, 80))
    image = torch.from_numpy(s.image).permute(2, 0, 1)[None].float() / 255
    probs = torch.nn.functional.one_hot(torch.from_numpy(s.label).long(), NUM_CLASSES)
    probs = probs.permute(2, 0, 1)[None].float()
    alpha, warnings = person_alpha_from_model(image, model, probs, input_size=info["image_size"],
                                              work_size=64)
    assert alpha.shape == (1, 1, 64, 53) and alpha.dtype == image.dtype
    assert 0 <= float(alpha.min()) and float(alpha.max()) <= 1
    assert isinstance(warnings, list)
    # the union keeps every kept face class sharp whatever the (barely trained) model says
    hair = CLASS_NAMES.index("hair")
    alpha_full, _ = person_alpha_from_model(image, model, probs, work_size=96)
    assert float(alpha_full[0, 0][torch.from_numpy(s.label) == hair].min()) == pytest.approx(1.0)
    # non-kept face classes are blurred even where the person model says person
    logits = torch.zeros(1, 2, 96, 80)
    logits[:, 1] = 20.0  # "everything is the person"
    only_hair, _ = person_alpha_from_model(image, logits, probs, (hair,), work_size=96)
    skin = torch.from_numpy(s.label) == CLASS_NAMES.index("skin")
    assert float(only_hair[0, 0][skin].max()) == 0.0
    assert float(only_hair[0, 0][torch.from_numpy(s.label) == 0].min()) == pytest.approx(1.0)


def test_person_model_finding_nobody_warns():
    logits = torch.zeros(1, 2, 16, 16)
    logits[:, 0] = 10.0
    alpha, warnings = person_alpha_from_model(torch.rand(1, 3, 32, 32), logits)
    assert alpha.shape == (1, 1, 32, 32) and float(alpha.max()) < 0.01
    assert len(warnings) == 1 and "no person" in warnings[0]


def test_face_model_is_refused_as_person_model(tmp_path):
    with pytest.raises(CheckpointError, match="2 classes"):
        load_person_model(tiny_checkpoint(tmp_path / "face.ckpt"))
    with pytest.raises(ValueError, match="2 classes"):
        person_alpha_from_model(torch.rand(1, 3, 32, 32), torch.zeros(1, NUM_CLASSES, 32, 32))


def test_render_cli_with_person_ckpt(person_ckpt, tmp_path, capsys):
    pytest.importorskip("portraitseg.cli.render", reason="the render CLI is not in this checkout")
    from portraitseg.cli.main import main

    ckpt, _, data = person_ckpt
    face = tiny_checkpoint(tmp_path / "face.ckpt")
    photo = sorted((data / "test" / "images").iterdir())[0]
    code = main(["render", str(photo), "-o", str(tmp_path / "out"), "--ckpt", str(face),
                 "--person-ckpt", str(ckpt)])
    err = capsys.readouterr().err
    assert code == 0, err
    outputs = list((tmp_path / "out").iterdir())
    assert len(outputs) == 1 and Image.open(outputs[0]).size == Image.open(photo).size
