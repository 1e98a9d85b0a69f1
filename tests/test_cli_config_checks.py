"""train.py / eval.py: a bad override ends in one ``error:`` line naming the key, the value and the fix
(exit status 2), never a traceback from inside a DataLoader, Lightning or an optimizer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from portraitseg.cli import config_dir
from portraitseg.cli.checks import ConfigError, check_config
from portraitseg.cli.train import RunConfigError, build_module, resume_checkpoint
from portraitseg.data import HelenDataModule
from portraitseg.data.layouts import DatasetNotFoundError
from portraitseg.io import InputError

REPO = Path(__file__).resolve().parents[1]
#: a tiny run (as tests/test_train_habits.py)
TINY = [
    "data=synthetic", "data.synthetic.n=8", "data.synthetic.size=64", "data.image_size=64",
    "data.batch_size=2", "model=fcn_mobilenet_v2", "model.encoder_name=tu-mobilenetv3_small_050",
    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "~callbacks.progress_bar", "scheduler.warmup_steps=1",
    "module.num_log_images=0", "logger=csv",
]


def config(root: Path, *overrides: str, name: str = "train", tiny: bool = True):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        base = TINY if name == "train" and tiny else []
        return compose(name, overrides=[*base, f"paths.root_dir={root}", f"paths.output_dir={root / 'run'}",
                                        *overrides])


# (override, the start of the message): the cases of the careless-user pass and their neighbours
BAD_OVERRIDES = [
    ("data.batch_size=0", "data.batch_size=0: must be an integer >= 1; pass e.g. data.batch_size=8"),
    ("data.batch_size=-4", "data.batch_size=-4: must be an integer >= 1"),
    ("data.batch_size=2.5", "data.batch_size=2.5: must be an integer >= 1"),
    ("data.batch_size=eight", "data.batch_size=eight: must be an integer >= 1"),
    ("data.eval_batch_size=0", "data.eval_batch_size=0: must be an integer >= 1 or null"),
    ("data.val_fraction=1", "data.val_fraction=1: must be a finite number in (0, 1); pass e.g. "
                            "data.val_fraction=0.1"),
    ("data.val_fraction=0", "data.val_fraction=0: must be a finite number in (0, 1)"),
    ("data.val_fraction=nan", "data.val_fraction=nan: must be a finite number in (0, 1)"),
    ("data.num_workers=-1", "data.num_workers=-1: must be an integer >= 0"),
    ("data.image_size=0", "data.image_size=0: must be an integer >= 32"),
    ("data.image_size=16", "data.image_size=16: must be an integer >= 32; pass e.g. data.image_size=256"),
    ("data.image_size=[256,256]", "data.image_size=[256,256]: must be an integer >= 32"),
    ("data.max_pixels=0", "data.max_pixels=0: must be an integer >= 1 or null"),
    ("data.limit=0", "data.limit=0: must be an integer >= 1 or null"),
    ("data.layout=helen", "data.layout=helen: must be one of auto, smith, helenstar, folder"),
    ("optimizer.lr=fast", "optimizer.lr=fast: must be a finite number > 0; pass e.g. optimizer.lr=1e-3"),
    ("optimizer.lr=0", "optimizer.lr=0: must be a finite number > 0"),
    ("optimizer.lr=-1e-3", "optimizer.lr=-0.001: must be a finite number > 0"),
    ("optimizer.lr=inf", "optimizer.lr=inf: must be a finite number > 0"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1: must be a finite number >= 0"),
    ("optimizer.betas=[0.9]", "optimizer.betas=[0.9]: must be two numbers in [0, 1)"),
    ("scheduler.warmup_steps=-5", "scheduler.warmup_steps=-5: must be an integer >= 0"),
    ("loss.label_smoothing=1.5", "loss.label_smoothing=1.5: must be a finite number in [0, 1)"),
    ("loss.class_weights=[1,2]", "loss.class_weights=[1,2]: must be null or 11 numbers >= 0"),
    ("model.classes=1", "model.classes=1: must be an integer >= 2"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0: must be an integer >= 1 or -1"),
    ("trainer.max_epochs=ten", "trainer.max_epochs=ten: must be an integer >= 1 or -1"),
    ("trainer.precision=fp16", "trainer.precision=fp16: must be one of 64-true, 32-true, 16-true, 16-mixed"),
    ("trainer.precision=true", "trainer.precision=True: must be one of"),
    ("trainer.accelerator=gpus", "trainer.accelerator=gpus: must be one of cpu, gpu, cuda, mps, tpu, auto"),
    ("trainer.devices=0", "trainer.devices=0: must be an integer >= 1 or -1 or one of auto"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0: must be an integer >= 1"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1: must be a finite number >= 0 or null"),
    ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5: must be an integer >= 0 or null "
                                        "or a finite number in [0, 1]"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval=0: must be an integer >= 1 or null"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0: must be an integer >= 1"),
    ("trainer.max_time=2h", 'trainer.max_time=2h: must be null or a duration "DD:HH:MM:SS"'),
    ("seed=-1", "seed=-1: must be an integer >= 0 or null"),
    ("module.num_log_images=-1", "module.num_log_images=-1: must be an integer >= 0"),
]


@pytest.mark.parametrize(("override", "message"), BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_is_named_with_its_fix(tmp_path, override, message):
    cfg = config(tmp_path, override)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize("override", ["data.batch_size=1", "data.val_fraction=0.5", "optimizer.lr=3e-4",
                                      "optimizer.lr=1", "trainer.max_epochs=-1", "trainer.precision=16-mixed",
                                      "trainer.precision=32", "trainer.limit_train_batches=0.25",
                                      "trainer.limit_val_batches=3", "trainer.max_time=00:02:00:00",
                                      "trainer.devices=auto", "seed=null", "data.image_size=48",
                                      "loss.class_weights=[1,1,1,1,1,1,1,1,1,1,1]"])
def test_good_overrides_pass(tmp_path, override):
    check_config(config(tmp_path, override))


def test_every_shipped_config_passes(tmp_path):
    """The validator knows every value the project's own configs use (no false alarm)."""
    for experiment in sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")):
        check_config(config(tmp_path, f"experiment={experiment}", tiny=False))
    for trainer in ("cpu", "gpu", "ddp", "ddp_cpu"):
        check_config(config(tmp_path, f"trainer={trainer}"))
    for data in ("synthetic", "helen", "helenstar", "folder", "mixed"):
        check_config(config(tmp_path, f"data={data}", tiny=False))
    check_config(config(tmp_path, "ckpt_path=default", name="eval"))
    with pytest.raises(ConfigError, match=r"^split=dev: must be one of test, val, train"):
        check_config(config(tmp_path, "ckpt_path=default", "split=dev", name="eval"))
    with pytest.raises(ConfigError, match=r"^data.sources.ccp.weight=-1: must be a finite number >= 0"):
        check_config(config(tmp_path, "data=mixed", "data.sources.ccp.weight=-1", tiny=False))
    with pytest.raises(ConfigError, match=r"^data.sources.ccp.val_fraction=1: must be a finite number "
                       r"in \[0, 1\)"):
        check_config(config(tmp_path, "data=mixed", "data.sources.ccp.val_fraction=1", tiny=False))


def test_data_root_that_is_a_file_says_so(tmp_path):
    afile = tmp_path / "photos.zip"
    afile.write_bytes(b"PK")
    with pytest.raises(DatasetNotFoundError, match=r"dataset root .*photos\.zip is a file, not a folder"):
        HelenDataModule(root=afile).setup()
    with pytest.raises(DatasetNotFoundError, match=r"photos\.zip is a file"):
        HelenDataModule(root=afile, layout="folder").setup()


def test_missing_or_malformed_train_list_is_named(tiny_helenstar):
    with pytest.raises(DatasetNotFoundError, match=r"^data.train_list=nope.txt: .*nope.txt is not a file; "
                       r"pass a list of '<image> <label>' lines relative to data.root"):
        HelenDataModule(root=tiny_helenstar, train_list="nope.txt").setup()
    (tiny_helenstar / "bad.txt").write_text("train/images/image_0.png\n")
    with pytest.raises(InputError, match=r"bad.txt:1: expected '<image> <label>'"):
        HelenDataModule(root=tiny_helenstar, train_list="bad.txt").setup()
    (tiny_helenstar / "gone.txt").write_text("train/images/missing.png train/labels/label_0.png\n")
    with pytest.raises(InputError, match=r"gone.txt:1: image .*missing.png does not exist"):
        HelenDataModule(root=tiny_helenstar, train_list="gone.txt").setup()


def _lightning_ckpt(path: Path, model: dict) -> Path:
    """A checkpoint as train.py writes it (the parts :func:`read_model_file` reads) for ``model``."""
    from portraitseg.models import create_model

    net = create_model(**{k: v for k, v in model.items() if k != "_target_"})
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "pytorch-lightning_version": "2.5.0", "hyper_parameters": {"net": model},
                "optimizer_states": [], "lr_schedulers": [], "loops": {}, "epoch": 0, "global_step": 1}, path)
    return path


def test_resuming_from_a_checkpoint_of_another_model_is_named(tmp_path):
    cfg = config(tmp_path)
    module = build_module(cfg)
    other = {"_target_": "portraitseg.models.create_model", "arch": "fpn", "encoder_weights": None,
             "encoder_name": "tu-mobilenetv3_small_050", "classes": 2}
    ckpt = _lightning_ckpt(tmp_path / "other.ckpt", other)
    with pytest.raises(RunConfigError, match=rf"^ckpt_path={ckpt}: it holds another model \(arch=fpn, "
                       r"encoder_name=tu-mobilenetv3_small_050, classes=2.*\) than the one configured; "
                       r"resume with the model=\.\.\."):
        resume_checkpoint(module, str(ckpt), str(tmp_path))
    same = _lightning_ckpt(tmp_path / "same.ckpt", dict(cfg.model))
    assert resume_checkpoint(module, str(same), str(tmp_path)) == str(same)  # the configured model
    assert resume_checkpoint(module, None, str(tmp_path)) is None
    bad = tmp_path / "notes.ckpt"
    bad.write_text("not a checkpoint")
    for path in (bad, tmp_path / "nope.ckpt"):
        with pytest.raises(RunConfigError, match=rf"^ckpt_path={path}: "):
            resume_checkpoint(module, str(path), str(tmp_path))
    with pytest.raises(RunConfigError, match=r"^ckpt_path=last: no checkpoint matches"):
        resume_checkpoint(module, "last", str(tmp_path / "task"))


def _run(script: str, cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PORTRAITSEG_ROOT=str(cwd))
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(REPO / script), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_entry_points_end_bad_values_in_one_error_line_exit_2(tmp_path):
    """End to end: the careless-user cases through train.py and eval.py (one process each)."""
    root = f"paths.root_dir={tmp_path}"
    cases = [
        ("train.py", ["data.batch_size=0"], "error: data.batch_size=0: must be an integer >= 1"),
        ("train.py", ["data=helen", f"data.root={REPO / 'README.md'}"],
         f"error: dataset root {REPO / 'README.md'} is a file, not a folder"),
        ("train.py", [*TINY, "data.train_list=nope.txt"], "error: data.train_list=nope.txt: "),
        ("eval.py", ["ckpt_path=default", "split=dev"], "error: split=dev: must be one of test, val, train"),
    ]
    for script, overrides, message in cases:
        proc = _run(script, tmp_path, root, *overrides)
        assert proc.returncode == 2, (overrides, proc.stderr[-2000:])
        assert message in proc.stderr, (overrides, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1, proc.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# the first impression: each log line once, a model summary without "FLOPs: 0"


def test_lightning_lines_reach_the_console_once():
    import io
    import logging

    import lightning  # noqa: F401 - attaches its own console handler

    from portraitseg.cli.extras import log_each_line_once

    ours, root = logging.getLogger("lightning"), logging.getLogger()
    saved = list(ours.handlers)
    hydra_console = logging.StreamHandler(io.StringIO())  # what Hydra's job logging installs
    root.addHandler(hydra_console)
    try:
        log_each_line_once()
        assert not [h for h in ours.handlers if type(h) is logging.StreamHandler]
        logging.getLogger("lightning.fabric.utilities.seed").info("Seed set to 7")
        assert hydra_console.stream.getvalue().count("Seed set to 7") == 1
    finally:
        root.removeHandler(hydra_console)
        for handler in saved:
            if handler not in ours.handlers:
                ours.addHandler(handler)


@pytest.mark.slow
def test_train_py_logs_each_line_once_and_counts_flops(tmp_path):
    tiny = [o for o in TINY if o != "trainer.enable_model_summary=false" and o != "~callbacks.progress_bar"]
    proc = _run("train.py", tmp_path, f"paths.root_dir={tmp_path}", *tiny,
                "trainer.enable_model_summary=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("Seed set to 42") == 1, out[-3000:]
    assert out.count("`Trainer.fit` stopped") == 1, out[-3000:]
    flops = [ln for ln in out.splitlines() if "Total FLOPs" in ln]
    assert len(flops) == 1 and not flops[0].split(":")[-1].strip().startswith("0"), flops


def test_values_a_lightning_constructor_refuses_are_named(tmp_path):
    from portraitseg.cli.checks import instantiate_checked
    from portraitseg.cli.train import _instantiate_all

    cfg = config(tmp_path, "callbacks.early_stopping.mode=up", tiny=False)
    with pytest.raises(ConfigError, match=r"^callbacks.early_stopping: `mode` can be .*got up; change the "
                       r"callbacks.early_stopping.\* overrides"):
        _instantiate_all(cfg.callbacks, "callbacks")
    cfg = config(tmp_path)  # a progress bar callback is in the list: the trainer must not refuse
    with pytest.raises(ConfigError, match=r"^trainer: Trainer was configured with "
                       r"`enable_progress_bar=False` but found `RichProgressBar`"):
        instantiate_checked(cfg.trainer, "trainer", callbacks=_instantiate_all(
            config(tmp_path, tiny=False).callbacks, "callbacks"))
